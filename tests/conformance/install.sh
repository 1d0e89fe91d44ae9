#!/usr/bin/env bash
# Install the pinned MCP conformance suite into tests/conformance/node_modules (needs node >= 20 and npm).
# test_conformance.py finds it there and skips, saying so, until this has run.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
