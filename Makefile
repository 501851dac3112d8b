# Two entry points for a fresh machine: `make demo` and `make test`. Both create or refresh .venv
# first, so nothing has to be installed by hand.
#
# How the install works, and why:
# 1. torch first, chosen by launch/torch_spec.py: the CPU build on a machine without an NVIDIA
#    driver (a plain `pip install torch` would pull a multi-GB CUDA build), the CUDA build where
#    `nvidia-smi` finds a GPU; `TORCH_SPEC=...` (and `TORCH_INDEX_URL=...`) override the choice.
# 2. DeepSpeed with its CPU ops compiled once (docs/DESIGN.md: JIT builds cost ~1 min per run
#    otherwise). This is the ONE build without isolation: DeepSpeed's setup.py imports torch to
#    compile its ops against the torch installed in step 1, which an isolated build cannot see.
# 3. specaware and every other dependency WITH build isolation (pip's default). Some of them ship
#    only as source and bring their own build backends (pyrsr and others build with hatchling);
#    pip installs each backend into a throw-away build environment. Turning isolation off here
#    once made every new machine fail with "Cannot import build backend 'hatchling.build'",
#    hidden on machines whose pip cache already held the built wheel.
#
# Python: 3.10 to 3.13 (pyproject's requires-python); python3.11 is preferred when present.
PY ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEEPSPEED_VERSION ?= 0.19.8
STAMP := $(VENV)/.stamp-install
EXTRAS ?= dev
# given on the command line or in the environment, these reach launch/torch_spec.py
export TORCH_SPEC TORCH_INDEX_URL TORCH_VERSION

.PHONY: venv test demo bench mutate clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile launch/torch_spec.py
	@$(PY) -c 'import sys; ok = (3, 10) <= sys.version_info[:2] < (3, 14); sys.exit(0 if ok else 1)' \
	  || { echo "error: $(PY) is Python $$($(PY) -c 'import platform; print(platform.python_version())'); specaware needs 3.10 to 3.13: make PY=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install $$($(BIN)/python launch/torch_spec.py)
	$(BIN)/pip install ninja py-cpuinfo hjson psutil pydantic packaging
	@$(BIN)/python -c "from deepspeed.git_version_info import installed_ops as o, version as v; import sys; sys.exit(0 if v.startswith('$(DEEPSPEED_VERSION)') and o.get('cpu_adam') and o.get('deepspeed_shm_comm') else 1)" 2>/dev/null \
	  || { $(BIN)/pip uninstall -y deepspeed; \
	       DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 \
	       $(BIN)/pip install --no-build-isolation "deepspeed==$(DEEPSPEED_VERSION)"; }
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	@touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q -ra

demo: venv
	$(BIN)/specaware demo

bench: venv
	$(BIN)/specaware bench

# Mutation checking of the core modules (tests/mutation/run.py says how it samples); slow, so
# not part of `make test`. Default: 20 mutants per module, seed 0; MUTATE_ARGS="--per-module 40"
# samples more.
mutate: venv
	$(BIN)/pip install -q -e ".[$(EXTRAS),mutation]"
	$(BIN)/python tests/mutation/run.py $(MUTATE_ARGS)

clean-venv:
	rm -rf $(VENV)
