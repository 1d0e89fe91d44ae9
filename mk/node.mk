# A real node on this machine (kubelet + containerd, tests marked `node`) and the sandbox image it runs,
# built without Docker. Included from the Makefile, which defines BIN and IMAGE_TAG.
# Needs root, mmdebstrap and the Debian node packages (.ci/run installs them) and KUBEBUILDER_ASSETS.

OFFLINE_SANDBOX_IMAGE ?= localhost/codegen-mcp/sandbox:$(IMAGE_TAG)
OFFLINE_SANDBOX_TAR ?= build/sandbox-image.tar
# Everything the image is made from: a change to any of them rebuilds it (the Debian base stays cached).
OFFLINE_SANDBOX_INPUTS := images/sandbox/Dockerfile images/sandbox/debian-packages.txt \
  images/sandbox/build_offline.py pyproject.toml README.md $(shell find src -name '*.py' -o -name py.typed)

$(OFFLINE_SANDBOX_TAR): $(OFFLINE_SANDBOX_INPUTS) | $(BIN)/python
	$(BIN)/python images/sandbox/build_offline.py --tag $(OFFLINE_SANDBOX_IMAGE) --output $@

sandbox-image-offline: $(OFFLINE_SANDBOX_TAR) ## Build the sandbox image without Docker (mmdebstrap; root) into build/sandbox-image.tar

# `make test` builds the image where the node tests can use it; elsewhere they skip and say why.
node-image:
	@if [ "$$(id -u)" = 0 ] && command -v mmdebstrap >/dev/null && command -v containerd >/dev/null; then \
	  $(MAKE) --no-print-directory sandbox-image-offline; \
	else \
	  echo "node-image: not building the offline sandbox image (needs root, mmdebstrap and containerd);" \
	       "the tests marked node will skip"; \
	fi

test: node-image

bench-node: install-dev node-image ## Real-node figures: node start; session create → Ready → first tool call
	$(BIN)/python bench/real_node.py

.PHONY: sandbox-image-offline node-image bench-node
