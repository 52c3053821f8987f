# zhllm-kit: every target installs what it needs through the setup stamp, so any target works first.
#   make demo                      whole pipeline on the built-in corpus, CPU, a few minutes
#   make test                      pytest -m "not gpu and not slow"
# See README.md for the stage map and every variable.

PY        ?= python3
VENV      ?= .venv
VPY       := $(VENV)/bin/python
# `pip install torch==2.13.0` takes the local CPU build on the dev machines and the CUDA build from
# PyPI on a GPU machine. Override for anything else, e.g. TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <cpu wheel index>".
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP     := $(VENV)/.stamp-setup
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
        setup-vllm clean

setup: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -m "not gpu and not slow" -q

test-all: $(STAMP)
	$(VPY) -m pytest -q

# ---- data ----------------------------------------------------------------------------------
data: $(STAMP)
	$(VPY) -m data_recipes.build data_recipes/recipes/$(RECIPE).yaml $(ARGS)

tokenizer: $(STAMP)
	$(VPY) -m data_recipes.tokenizer data_recipes/recipes/$(RECIPE).yaml $(ARGS)

# ---- training ------------------------------------------------------------------------------
pretrain: $(STAMP)
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) -m pretrain.train pretrain/recipes/$(RECIPE).yaml $(ARGS)

export: $(STAMP)
	$(VPY) -m pretrain.export $(RUN) $(ARGS)

sft: $(STAMP)
	$(VPY) -m sft.train sft/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) backend=$(BACKEND) $(ARGS)

dpo: $(STAMP)
	$(VPY) -m rl.dpo rl/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) backend=$(BACKEND) $(ARGS)

grpo: $(STAMP)
	$(VPY) -m rl.grpo rl/recipes/$(RECIPE).yaml $(if $(INIT),init_from=$(INIT)) $(ARGS)

# ---- evaluation ----------------------------------------------------------------------------
eval: $(STAMP)
	$(VPY) -m eval.run eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(PROTOCOL),protocol=$(PROTOCOL)) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(if $(filter hf vllm,$(BACKEND)),backend=$(BACKEND)) $(ARGS)

ablation: $(STAMP)
	$(VPY) -m eval.ablation eval/benchmarks/$(BENCH).yaml model=$(MODEL) $(if $(DATA_DIR),data_dir=$(DATA_DIR)) $(if $(LIMIT),limit=$(LIMIT)) $(if $(filter hf vllm,$(BACKEND)),backend=$(BACKEND)) $(ARGS)

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

# GPU machines only: vLLM brings its own CUDA torch.
setup-vllm: $(STAMP)
	$(VPY) -m pip install -q -e ".[vllm]"

# ---- demo ----------------------------------------------------------------------------------
include demo.mk

clean:
	rm -rf runs
