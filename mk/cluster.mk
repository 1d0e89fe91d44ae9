# Container images, a local kind cluster, the Helm release and the end-to-end tests.
# Included from the Makefile, which defines BIN, VENV, KIND_CLUSTER and IMAGE_TAG.
# Needs docker (with a running engine), kind, kubectl and helm; `make e2e` runs them all in order.

DOCKER ?= docker
KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
IMAGE_REGISTRY ?= ghcr.io/codegen-mcp
SANDBOX_IMAGE ?= $(IMAGE_REGISTRY)/sandbox:$(IMAGE_TAG)
CONTROL_PLANE_IMAGE ?= $(IMAGE_REGISTRY)/control-plane:$(IMAGE_TAG)
RELEASE ?= codegen-mcp
NAMESPACE ?= codegen-mcp
CHART := helm/codegen-mcp
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KIND_KUBECONFIG ?= build/kind-$(KIND_CLUSTER).kubeconfig
KIND_CONFIG ?= tests/e2e/kind-config.yaml
KIND_VALUES ?= $(CHART)/ci/kind-values.yaml
# Calico enforces NetworkPolicy (kind's default CNI, kindnet, does not): the sandbox isolation test needs it.
CALICO_VERSION ?= v3.29.1
CALICO_MANIFEST ?= https://raw.githubusercontent.com/projectcalico/calico/$(CALICO_VERSION)/manifests/calico.yaml
DEPLOY_TIMEOUT ?= 5m

images: ## Build the sandbox and control-plane images (IMAGE_REGISTRY/{sandbox,control-plane}:IMAGE_TAG)
	$(DOCKER) build -f images/sandbox/Dockerfile -t $(SANDBOX_IMAGE) .
	$(DOCKER) build -f images/control-plane/Dockerfile -t $(CONTROL_PLANE_IMAGE) .

kind-up: ## Create the kind cluster KIND_CLUSTER with Calico (enforces NetworkPolicy); reuses an existing one
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG); \
	fi
	$(KUBECTL) --context $(KIND_CONTEXT) apply --server-side --force-conflicts -f $(CALICO_MANIFEST) >/dev/null
	$(KUBECTL) --context $(KIND_CONTEXT) -n kube-system rollout status daemonset/calico-node --timeout=300s
	$(KUBECTL) --context $(KIND_CONTEXT) -n kube-system rollout status deployment/calico-kube-controllers --timeout=300s
	$(KUBECTL) --context $(KIND_CONTEXT) wait --for=condition=Ready nodes --all --timeout=300s

kind-load: ## Load both images into the kind cluster
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(SANDBOX_IMAGE) $(CONTROL_PLANE_IMAGE)

deploy: ## helm upgrade --install the chart into the kind cluster (NAMESPACE, RELEASE) with the loaded images
	@# Helm installs crds/ once and never upgrades them: apply them first so a changed CRD lands too.
	$(KUBECTL) --context $(KIND_CONTEXT) apply --server-side --force-conflicts -f $(CHART)/crds/
	$(HELM) --kube-context $(KIND_CONTEXT) upgrade --install $(RELEASE) $(CHART) \
	  --namespace $(NAMESPACE) --create-namespace --values $(KIND_VALUES) \
	  --set-string image.repository=$(IMAGE_REGISTRY)/control-plane,image.tag=$(IMAGE_TAG) \
	  --set-string sessions.image.repository=$(IMAGE_REGISTRY)/sandbox,sessions.image.tag=$(IMAGE_TAG) \
	  --wait --timeout $(DEPLOY_TIMEOUT)
	@# A rebuilt image under the same tag needs new Pods.
	@for d in $$($(KUBECTL) --context $(KIND_CONTEXT) -n $(NAMESPACE) get deployment -o name \
	    -l app.kubernetes.io/instance=$(RELEASE)); do \
	  $(KUBECTL) --context $(KIND_CONTEXT) -n $(NAMESPACE) rollout restart $$d && \
	  $(KUBECTL) --context $(KIND_CONTEXT) -n $(NAMESPACE) rollout status $$d --timeout=$(DEPLOY_TIMEOUT) || exit 1; \
	done

# tests/e2e takes the cluster through pytest-kubernetes' kind provider, by this kubeconfig; without --k8s-provider
# the same scenarios run on the local real control plane and node (`make test`).
e2e: install-dev kind-up images kind-load deploy ## Build, load and deploy into kind, then run tests/e2e against it
	@mkdir -p $(dir $(KIND_KUBECONFIG))
	$(KIND) get kubeconfig --name $(KIND_CLUSTER) > $(KIND_KUBECONFIG)
	CODEGEN_E2E_NAMESPACE=$(NAMESPACE) CODEGEN_E2E_RELEASE=$(RELEASE) $(BIN)/pytest -m e2e tests/e2e \
	  --k8s-provider=kind --k8s-cluster-name=$(KIND_CLUSTER) --k8s-kubeconfig=$(KIND_KUBECONFIG) $(PYTEST_ARGS)

kind-down: ## Delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

chart-crds: ## Copy crds/ into the chart (a test fails while they differ)
	cp crds/codegensession.yaml $(CHART)/crds/codegensession.yaml
	cp crds/codegensandboxpool.yaml $(CHART)/crds/codegensandboxpool.yaml

.PHONY: images kind-up kind-load deploy e2e kind-down chart-crds
