# Streamotion developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS ?= operator,ingest,jobs,serving,dashboards,dev,local
export PIP_CACHE_DIR ?= $(HOME)/.cache/streamotion/pip
export PIP_DISABLE_PIP_VERSION_CHECK = 1
PYTEST_ARGS ?=
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: help venv prepare lint format generate docs test local local-plan up down images images-cpu images-gpu

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## create or update .venv (the CLI lands at .venv/bin/streamotion)

prepare: venv  ## build or fetch the real servers the tests use, into ~/.cache/streamotion
	$(PY) -m streamotion.dev.prepare

lint: venv  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

generate: venv  ## regenerate the CRD and the docs' generated pages (API, CLI, metrics, Helm values, benchmarks)
	$(PY) -m streamotion crd -o charts/streamotion/crds/streampipelines.streamotion.io.yaml
	$(PY) -m streamotion docs generate

docs: generate  ## build the documentation site (mkdocs.yml) strictly into site/
	$(VENV)/bin/mkdocs build --strict

test: venv prepare lint  ## every test, against real servers (the CI command)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# First run: when the Hugging Face hub is unreachable and no model is trained yet, --train fine-tunes
# one on LOCAL_TRAIN_LIMIT GoEmotions rows (cached; later runs reuse it). LOCAL_ARGS=--tiny-model: smoke run.
# Needs Python 3.11+ and the package registries only: no root, no apt, no system Java (docs/getting-started/one-machine.md).
# Writes go to this checkout (.venv, LOCAL_WORKDIR, reports/) and ~/.cache/streamotion (STREAMOTION_CACHE).
# LOCAL_VENV= skips creating/updating the venv (an existing VENV=... is used as it is).
LOCAL_PIPELINE ?= examples/local.yaml
LOCAL_TRAIN_LIMIT ?= 8000
LOCAL_ARGS ?= --train --train-limit $(LOCAL_TRAIN_LIMIT)
LOCAL_WORKDIR ?= .local-run
LOCAL_VENV ?= venv

local-plan:
	@$(PYTHON) src/streamotion/local/plan.py --venv $(VENV) --python $(PYTHON) --args='$(LOCAL_ARGS)'
	@mkdir -p $(LOCAL_WORKDIR)/tmp

local: export TMPDIR = $(abspath $(LOCAL_WORKDIR))/tmp
local: local-plan $(LOCAL_VENV)  ## run examples/local.yaml end to end on this machine (installs what is missing first)
	$(PY) -m streamotion.local.prepare
	$(PY) -m streamotion run $(LOCAL_PIPELINE) --local --workdir $(LOCAL_WORKDIR) \
	  --summary-json reports/summary.json $(LOCAL_ARGS)

# ---------------------------------------------------------------- deploy (Docker, kind, Helm, kubectl)
IMAGE_PREFIX ?= streamotion/
IMAGE_TAG ?= dev
IMAGES := operator ingest jobs serving
# The model image of GPU workers (spec.model.device: gpu): serving/Dockerfile on Ray's CUDA 12.8 image
# (-cu128: -gpu aliases CUDA 12.1) with PyTorch's CUDA 12.8 wheels.
GPU_IMAGE := serving-gpu
GPU_BUILD_ARGS := --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128 \
  --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 --build-arg TORCH_CUDA=12.8
KIND_CLUSTER ?= streamotion
# Images reach the kind nodes as one single-platform archive (docker save --platform, then
# kind load image-archive): `kind load docker-image` fails with Docker's containerd image store,
# the default of Docker 29 (kubernetes-sigs/kind#3795). "" = the platform of the built images.
KIND_PLATFORM ?=
RELEASE ?= streamotion
NAMESPACE ?= streamotion
# helm on PATH, else the pinned one `make prepare` builds into ~/.cache/streamotion/helm (needs .venv and Go).
HELM ?= $(shell command -v helm 2>/dev/null || { test -x $(PY) && $(PY) -c 'from streamotion.dev.helm import ensure_helm; print(ensure_helm(log=lambda *a: None))'; })
HELM_REPOS := kubeflow-spark=https://kubeflow.github.io/spark-operator \
  kuberay=https://ray-project.github.io/kuberay-helm/ \
  prometheus-community=https://prometheus-community.github.io/helm-charts \
  cnpg=https://cloudnative-pg.github.io/charts

images: images-cpu images-gpu  ## build every image (docker): images-cpu and images-gpu

images-cpu:  ## build the operator, ingest, jobs and serving images, tagged streamotion/NAME:dev
	@command -v docker >/dev/null || { echo "make images needs docker" >&2; exit 1; }
	@for c in $(IMAGES); do \
	  echo "==> $(IMAGE_PREFIX)$$c:$(IMAGE_TAG) ($$c/Dockerfile)"; \
	  DOCKER_BUILDKIT=1 docker build -f $$c/Dockerfile -t $(IMAGE_PREFIX)$$c:$(IMAGE_TAG) . || exit 1; \
	done

images-gpu:  ## build the model image of GPU workers, tagged streamotion/serving-gpu:dev
	@command -v docker >/dev/null || { echo "make images needs docker" >&2; exit 1; }
	@echo "==> $(IMAGE_PREFIX)$(GPU_IMAGE):$(IMAGE_TAG) (serving/Dockerfile, CUDA)"
	DOCKER_BUILDKIT=1 docker build -f serving/Dockerfile $(GPU_BUILD_ARGS) -t $(IMAGE_PREFIX)$(GPU_IMAGE):$(IMAGE_TAG) .

# kind has no GPUs (the demo pipeline is device: cpu): the CPU images only.
up: images-cpu  ## kind cluster, images, Helm install, the demo pipeline; prints the Grafana URL
	@for t in kind kubectl; do command -v $$t >/dev/null || { echo "make up needs $$t on PATH" >&2; exit 1; }; done
	@test -n "$(HELM)" || { echo "make up needs helm on PATH (or \`make venv\` and Go for the pinned build)" >&2; exit 1; }
	@kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
	  || kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 180s
	kubectl config use-context kind-$(KIND_CLUSTER)
	@refs='$(foreach c,$(IMAGES),$(IMAGE_PREFIX)$(c):$(IMAGE_TAG))'; platform='$(KIND_PLATFORM)'; \
	  if [ -z "$$platform" ]; then platform=$$(docker image inspect \
	    -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' $(IMAGE_PREFIX)$(firstword $(IMAGES)):$(IMAGE_TAG)) || exit 1; fi; \
	  save=(docker save); docker image save --help 2>/dev/null | grep -q -- --platform && save+=(--platform "$$platform"); \
	  dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && echo "==> kind load image-archive ($$platform):$$refs" \
	  && "$${save[@]}" -o "$$dir/images.tar" $$refs && kind load image-archive --name $(KIND_CLUSTER) "$$dir/images.tar"
	@for r in $(HELM_REPOS); do $(HELM) repo add --force-update $${r%%=*} $${r#*=} >/dev/null || exit 1; done
	$(HELM) dependency build charts/streamotion
	@echo "==> StreamPipeline CRD (Helm installs crds/ only on a first install; this also upgrades it)"
	kubectl apply --server-side --force-conflicts -f charts/streamotion/crds/
	$(HELM) upgrade --install $(RELEASE) charts/streamotion -n $(NAMESPACE) --create-namespace \
	  -f charts/streamotion/values-kind.yaml --set image.tag=$(IMAGE_TAG) --wait --timeout 20m
	kubectl apply -n $(NAMESPACE) -f examples/demo.yaml
	@echo "==> waiting for StreamPipeline demo to be Ready (first start pulls Kafka, Spark and Ray images)"
	kubectl wait -n $(NAMESPACE) streampipeline/demo --for=condition=Ready --timeout=30m \
	  || { kubectl get -n $(NAMESPACE) streampipeline/demo -o wide; exit 1; }
	kubectl get -n $(NAMESPACE) streampipeline -o wide
	@echo ""
	@echo "Grafana:  http://localhost:3000   user: admin   password:"
	@echo "  kubectl -n $(NAMESPACE) get secret $(RELEASE)-grafana -o jsonpath='{.data.admin-password}' | base64 -d; echo"
	@echo "HTTP ingest (sources of type http): http://localhost:8080"

down:  ## delete the kind cluster that `make up` created
	@command -v kind >/dev/null || { echo "make down needs kind" >&2; exit 1; }
	kind delete cluster --name $(KIND_CLUSTER)
