# edgebuild: make target=T [model=M] | make test | make bench | make setup | make clean
# The first run creates .venv and installs the pinned toolchain (torch CPU wheel first, then the
# rest under constraints.txt so nothing pulls a CUDA torch); later runs reuse it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OLIVE  := $(VENV)/.olive-installed
model  ?= minilm
export ORT_DISABLE_TELEMETRY := 1
export OLIVE_DISABLE_TELEMETRY := 1
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all build setup test conformance bench release clean targets models passes help

all: $(if $(target),build,help)

help:
	@echo "usage: make target=desktop-int8 [model=minilm]   build a model for a target"
	@echo "       make test | make conformance | make bench | make targets | make models | make passes | make clean"

$(STAMP): requirements.lock constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "> installing the pinned toolchain into $(VENV) (first run only, ~2 GB)"
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(OLIVE): $(STAMP) requirements-olive.lock
	$(BIN)/pip install --quiet -c constraints.txt -r requirements-olive.lock
	@touch $@

setup: $(STAMP)

build: $(STAMP)
	@$(BIN)/edgebuild build --target $(target) --model $(model) --package

test: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not conformance" --durations=20

# Every ONNX model-zoo file in the onnx wheel on the desktop targets (tests/conformance/).
conformance: $(STAMP)
	$(BIN)/python -m pytest -q tests/conformance -m conformance

bench: $(OLIVE)
	$(BIN)/edgebuild bench --repeats 100
	$(BIN)/edgebuild bench-arm
	$(BIN)/edgebuild bench-ota --kills 200

# The release pipeline: release.toml's matrix, gated, signed with EDGEBUILD_SIGNING_KEY, published to ota/.
release: $(STAMP)
	$(BIN)/edgebuild release --jobs $(or $(jobs),2)

targets: $(STAMP)
	@$(BIN)/edgebuild targets

models: $(STAMP)
	@$(BIN)/edgebuild models

passes: $(STAMP)
	@$(BIN)/edgebuild passes

clean:
	rm -rf $(filter-out artifacts/README.md,$(wildcard artifacts/*))
