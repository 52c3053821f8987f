# `make demo`: the whole pipeline on the built-in curriculum (data_recipes/demo_data.py), CPU, ~10 minutes:
#   data -> tokenizer -> shards -> pretrain (+ held-out loss) -> SFT -> DPO (+ held-out pairs)
#   -> GRPO (+ held-out prompts) -> eval (2 protocols x 4 runs) -> leaderboard -> stage effects
# Every stage hands the next an explicit run folder named demo-<stamp> (DEMO=... to choose the name);
# the closing summary (python -m leaderboard.effects) gives each stage's effect against its parent on
# items it never trained on, with its test of significance.
# `make showcase`: the same pipeline with a larger model and more steps (~30 minutes), SHOWCASE_ARGS below.
# Extra overrides per stage: PRETRAIN_ARGS, SFT_ARGS, DPO_ARGS, GRPO_ARGS (e.g. seeds, see benchmarks/showcase.py).
DEMO_STAMP  := $(shell date +%Y%m%d-%H%M%S)
DEMO        ?= demo-$(DEMO_STAMP)
DEMO_RUNS    = runs/pretrain/$(DEMO) runs/sft/$(DEMO) runs/dpo/$(DEMO) runs/grpo/$(DEMO)
PRETRAIN_ARGS ?=
SFT_ARGS      ?=
DPO_ARGS      ?=
GRPO_ARGS     ?=
SHOWCASE      ?= showcase-$(DEMO_STAMP)
SHOWCASE_PRETRAIN ?= model.size=demo_256 train.max_steps=1600

.PHONY: demo showcase

demo: $(STAMP)
	@echo "== demo $(DEMO): data -> tokenizer -> shards"
	$(MAKE) --no-print-directory data RECIPE=demo
	@echo "== demo: pretrain (then its loss on held-out documents vs the same documents token-shuffled)"
	$(MAKE) --no-print-directory pretrain RECIPE=demo ARGS="run.name=$(DEMO) $(PRETRAIN_ARGS)"
	@echo "== demo: SFT on the train entities (full fine-tuning, decontaminated)"
	$(MAKE) --no-print-directory sft RECIPE=demo INIT=runs/pretrain/$(DEMO) ARGS="run.name=$(DEMO) $(SFT_ARGS)"
	@echo "== demo: DPO (then its implicit reward on held-out pairs)"
	$(MAKE) --no-print-directory dpo RECIPE=demo_dpo INIT=runs/sft/$(DEMO) ARGS="run.name=$(DEMO) $(DPO_ARGS)"
	@echo "== demo: GRPO (then its greedy reward on held-out prompts, init vs trained)"
	$(MAKE) --no-print-directory grpo RECIPE=demo_grpo INIT=runs/dpo/$(DEMO) ARGS="run.name=$(DEMO) $(GRPO_ARGS)"
	@echo "== demo: evaluation on the built-in benchmark (entities no post-training row mentions), two protocols"
	for run in $(DEMO_RUNS); do \
	  $(MAKE) --no-print-directory eval BENCH=demo MODEL=$$run PROTOCOL=base-5shot-logits || exit 1; \
	  $(MAKE) --no-print-directory eval BENCH=demo MODEL=$$run PROTOCOL=chat-0shot-gen || exit 1; \
	done
	@echo "== demo: leaderboard"
	$(MAKE) --no-print-directory leaderboard
	@echo "== demo: stage effects"
	$(VPY) -m leaderboard.effects runs/grpo/$(DEMO) --json runs/grpo/$(DEMO)/effects.json
	@echo "demo done: runs/*/$(DEMO), leaderboard in runs/leaderboard/ (open runs/leaderboard/index.html)"

showcase: $(STAMP)
	$(MAKE) --no-print-directory demo DEMO=$(SHOWCASE) PRETRAIN_ARGS="$(SHOWCASE_PRETRAIN) $(PRETRAIN_ARGS)"
