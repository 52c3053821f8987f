# `make demo`: the whole pipeline on the built-in curriculum (data_recipes/demo_data.py), CPU, under
# 10 minutes on 2 cores: data -> tokenizer -> shards -> pretrain (+ held-out loss, DEMO_PRETRAIN steps)
#   -> SFT -> DPO (+ held-out pairs) -> eval chat-0shot-gen of base, SFT, DPO -> leaderboard -> stage effects.
# `make showcase`: every stage and every check, ~20-25 minutes: SHOWCASE_PRETRAIN steps, then GRPO
#   (+ held-out prompts) after DPO, and both protocols (base-5shot-logits, chat-0shot-gen) for all four runs.
# Every stage hands the next an explicit run folder named demo-<stamp> (DEMO=... to choose the name);
# the closing summary (python -m leaderboard.effects) gives each stage's effect against its parent on
# items it never trained on, with its test of significance.
# Extra overrides per stage: PRETRAIN_ARGS, SFT_ARGS, DPO_ARGS, GRPO_ARGS (e.g. seeds, see benchmarks/showcase.py).
DEMO_STAMP  := $(shell date +%Y%m%d-%H%M%S)
DEMO        ?= demo-$(DEMO_STAMP)
SHOWCASE    ?= showcase-$(DEMO_STAMP)
DEMO_PRETRAIN ?= train.max_steps=700 train.save_every_steps=350
SHOWCASE_PRETRAIN ?= train.max_steps=1600 train.save_every_steps=400
PRETRAIN_ARGS ?=
SFT_ARGS      ?=
DPO_ARGS      ?=
GRPO_ARGS     ?=

.PHONY: demo showcase

# $(1) run name, $(2) pretrain overrides
define demo_base
	@echo "== $(1): data -> tokenizer -> shards"
	$(MAKE) --no-print-directory data RECIPE=demo
	@echo "== $(1): pretrain (then its loss on held-out documents vs the same documents token-shuffled)"
	$(MAKE) --no-print-directory pretrain RECIPE=demo ARGS="run.name=$(1) $(2) $(PRETRAIN_ARGS)"
	@echo "== $(1): SFT on the train entities (full fine-tuning, decontaminated)"
	$(MAKE) --no-print-directory sft RECIPE=demo INIT=runs/pretrain/$(1) ARGS="run.name=$(1) $(SFT_ARGS)"
	@echo "== $(1): DPO (then its implicit reward on held-out pairs)"
	$(MAKE) --no-print-directory dpo RECIPE=demo_dpo INIT=runs/sft/$(1) ARGS="run.name=$(1) $(DPO_ARGS)"
endef

# $(1) protocols, $(2) run folders
define demo_evals
	@echo "== evaluation on the built-in benchmark (entities no post-training row mentions): $(1)"
	for run in $(2); do for p in $(1); do \
	  $(MAKE) --no-print-directory eval BENCH=demo MODEL=$$run PROTOCOL=$$p || exit 1; \
	done; done
endef

# $(1) the last run of the lineage
define demo_close
	@echo "== leaderboard"
	$(MAKE) --no-print-directory leaderboard
	@echo "== stage effects"
	$(VPY) -m leaderboard.effects $(1) --json $(1)/effects.json
	@echo "done: runs/*/$(notdir $(1)), leaderboard in runs/leaderboard/ (open runs/leaderboard/index.html)"
endef

demo: $(STAMP)
	$(call demo_base,$(DEMO),$(DEMO_PRETRAIN))
	$(call demo_evals,chat-0shot-gen,runs/pretrain/$(DEMO) runs/sft/$(DEMO) runs/dpo/$(DEMO))
	$(call demo_close,runs/dpo/$(DEMO))

showcase: $(STAMP)
	$(call demo_base,$(SHOWCASE),$(SHOWCASE_PRETRAIN))
	@echo "== $(SHOWCASE): GRPO (then its greedy reward on held-out prompts, init vs trained)"
	$(MAKE) --no-print-directory grpo RECIPE=demo_grpo INIT=runs/dpo/$(SHOWCASE) ARGS="run.name=$(SHOWCASE) $(GRPO_ARGS)"
	$(call demo_evals,base-5shot-logits chat-0shot-gen,runs/pretrain/$(SHOWCASE) runs/sft/$(SHOWCASE) runs/dpo/$(SHOWCASE) runs/grpo/$(SHOWCASE))
	$(call demo_close,runs/grpo/$(SHOWCASE))
