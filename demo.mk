# `make demo`: the whole pipeline on the built-in corpus, benchmark and a debug-size model, on CPU.
# Every stage hands the next an explicit run folder named demo-<stamp>.
DEMO_STAMP := $(shell date +%Y%m%d-%H%M%S)
DEMO       ?= demo-$(DEMO_STAMP)

demo: $(STAMP)
	@echo "== demo $(DEMO): data -> tokenizer -> shards"
	$(MAKE) --no-print-directory data RECIPE=demo
	@echo "== demo: pretrain (debug size)"
	$(MAKE) --no-print-directory pretrain RECIPE=demo ARGS="run.name=$(DEMO)"
	@echo "demo pipeline: later stages are added by their issues"
