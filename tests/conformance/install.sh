#!/usr/bin/env bash
# Install the pinned MCP conformance suite into tests/conformance/node_modules (needs node >= 20 and npm).
# test_conformance.py finds it there and skips, saying so, until this has run.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: the MCP conformance tests will skip, saying so (install Node.js >= 20 and npm to run them)" >&2
  exit 0
fi
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
