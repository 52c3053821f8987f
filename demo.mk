# `make demo`: the whole pipeline on the built-in corpus, benchmark and a debug-size model, on CPU:
#   data -> tokenizer -> shards -> pretrain -> SFT -> DPO -> GRPO -> eval (2 protocols) -> leaderboard
# Every stage hands the next an explicit run folder named demo-<stamp> (DEMO=... to choose the name).
DEMO_STAMP  := $(shell date +%Y%m%d-%H%M%S)
DEMO        ?= demo-$(DEMO_STAMP)
SHARED_DATA ?= ../shared/data
DEMO_RUNS    = runs/pretrain/$(DEMO) runs/sft/$(DEMO) runs/dpo/$(DEMO) runs/grpo/$(DEMO)

demo: $(STAMP)
	@echo "== demo $(DEMO): data -> tokenizer -> shards"
	$(MAKE) --no-print-directory data RECIPE=demo
	@echo "== demo: pretrain (debug size)"
	$(MAKE) --no-print-directory pretrain RECIPE=demo ARGS="run.name=$(DEMO)"
	@echo "== demo: SFT (full fine-tuning on the demo mix, decontaminated)"
	$(MAKE) --no-print-directory sft RECIPE=demo INIT=runs/pretrain/$(DEMO) ARGS="run.name=$(DEMO)"
	@echo "== demo: DPO"
	$(MAKE) --no-print-directory dpo RECIPE=demo_dpo INIT=runs/sft/$(DEMO) ARGS="run.name=$(DEMO)"
	@echo "== demo: GRPO"
	$(MAKE) --no-print-directory grpo RECIPE=demo_grpo INIT=runs/dpo/$(DEMO) ARGS="run.name=$(DEMO)"
	@echo "== demo: evaluation on the built-in benchmark, two protocols"
	for run in $(DEMO_RUNS); do \
	  $(MAKE) --no-print-directory eval BENCH=demo MODEL=$$run PROTOCOL=base-5shot-logits || exit 1; \
	  $(MAKE) --no-print-directory eval BENCH=demo MODEL=$$run PROTOCOL=chat-0shot-gen || exit 1; \
	done
	@if [ -d $(SHARED_DATA)/ceval/val ]; then \
	  echo "== demo: C-Eval (shared split) from $(SHARED_DATA)/ceval, base and SFT"; \
	  for run in runs/pretrain/$(DEMO) runs/sft/$(DEMO); do \
	    $(MAKE) --no-print-directory eval BENCH=ceval MODEL=$$run PROTOCOL=base-5shot-logits DATA_DIR=$(SHARED_DATA)/ceval || exit 1; \
	  done; \
	else echo "== demo: $(SHARED_DATA)/ceval not present; C-Eval step skipped"; fi
	@echo "== demo: leaderboard"
	$(MAKE) --no-print-directory leaderboard
	@echo "demo done: runs/*/$(DEMO), leaderboard in runs/leaderboard/ (open runs/leaderboard/index.html)"
