# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create/refresh .venv first. The CPU torch wheel is pinned before anything else so
# pip never pulls a multi-GB CUDA build; DeepSpeed is built once with its CPU ops compiled
# (see shared DESIGN.md section 4: JIT builds at start-up cost ~1 min per run otherwise).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DEEPSPEED_VERSION ?= 0.19.8
STAMP := $(VENV)/.stamp-install
# On a machine with a GPU, set TORCH_SPEC=torch (CUDA build) before the first `make`.
TORCH_SPEC ?= torch==$(TORCH_VERSION)

.PHONY: venv test test-all demo bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install ninja py-cpuinfo hjson psutil pydantic packaging
	@$(BIN)/python -c "from deepspeed.git_version_info import installed_ops as o, version as v; import sys; sys.exit(0 if v.startswith('$(DEEPSPEED_VERSION)') and o.get('cpu_adam') and o.get('deepspeed_shm_comm') else 1)" 2>/dev/null \
	  || { $(BIN)/pip uninstall -y deepspeed; \
	       DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 \
	       $(BIN)/pip install --no-build-isolation "deepspeed==$(DEEPSPEED_VERSION)"; }
	$(BIN)/pip install --no-build-isolation -e ".[dev]"
	@touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q -ra

test-all: venv
	$(BIN)/python -m pytest -q -ra -m ""

demo: venv
	$(BIN)/specaware demo

bench: venv
	$(BIN)/specaware bench

clean-venv:
	rm -rf $(VENV)
