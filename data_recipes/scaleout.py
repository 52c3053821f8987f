"""Run a recipe's cleaning chain beyond one process pool: datatrove executors, locally or on Ray
(optional `data` extra: `pip install -e ".[data]"`; datatrove is imported only here).

The recipe's local JSON Lines / parquet sources are read by datatrove readers, our operator chain
runs as one datatrove filter (same operators, same parameters, same decisions as
`data_recipes.build`), kept documents go to `<out>/cleaned/*.jsonl` and rejected ones, with the
rejecting operator as `filter_reason`, to `<out>/quarantine/`. Then dedupe, train the tokenizer and
write shards on one machine from the cleaned output (the printed next command), or add datatrove's
sharded MinhashDedup stages first for corpora whose dedupe index does not fit one machine.

Run as:
    python -m data_recipes.scaleout data_recipes/recipes/steel_mix.yaml data_root=/mnt/corpora \\
        --executor=ray --tasks=512 --out=/mnt/cleaned/steel_mix       # on a Ray cluster (CPU nodes)
    python -m data_recipes.scaleout data_recipes/recipes/shared_zh.yaml --executor=local --tasks=4 --out=/tmp/zh
"""
from __future__ import annotations

import sys
from pathlib import Path

from core.config import ConfigError, parse_args
from core.errors import entrypoint
from data_recipes.build import BuildConfig, validate
from data_recipes.clean import Chain, load_plugins
from data_recipes.sources import DataError, resolve_root, uses_local


def _chain_filter_class():
    from datatrove.pipeline.filters.base_filter import BaseFilter

    class ChainFilter(BaseFilter):
        """A datatrove filter that applies our chain (mappers rewrite doc.text)."""
        name = "zhllm-kit operator chain"

        def __init__(self, operators: list[dict], plugins: list[str], exclusion_writer=None):
            super().__init__(exclusion_writer=exclusion_writer)
            self.operators, self.plugins, self._chain = operators, plugins, None

        def filter(self, doc):
            if self._chain is None:          # built in the worker: plugins register there too
                load_plugins(self.plugins)
                self._chain = Chain(self.operators)
            text, op, reason, _ = self._chain(doc.text)
            if op is not None:
                return False, op
            if not text:
                return False, "empty"
            doc.text = text
            return True

    ChainFilter.__module__, ChainFilter.__qualname__ = __name__, "ChainFilter"
    return ChainFilter


def __getattr__(name: str):
    # `ChainFilter` is built on first use so that importing this module needs no datatrove, yet
    # pickle finds it as data_recipes.scaleout.ChainFilter in the executor's worker processes.
    if name == "ChainFilter":
        globals()[name] = _chain_filter_class()
        return globals()[name]
    raise AttributeError(name)


def readers(cfg: BuildConfig) -> list:
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    out = []
    root = resolve_root(cfg.data_root)
    for src in cfg.sources:
        if not uses_local(src, cfg.data_root):
            raise DataError(f"source '{src.name or src.hub}': scale-out reads local copies; set data_root")
        for pattern in [p.strip() for p in src.path.split(",") if p.strip()]:
            full = Path(pattern) if Path(pattern).is_absolute() or root is None else root / pattern
            folder, glob = (full, None) if full.is_dir() else (full.parent, full.name)
            while glob and any(ch in folder.name for ch in "*?["):      # "a/*/b.jsonl": start above the magic
                glob, folder = f"{folder.name}/{glob}", folder.parent
            kind = ParquetReader if (glob or "").endswith(".parquet") else JsonlReader
            limit = src.max_docs or -1
            out.append(kind(str(folder), glob_pattern=glob, text_key=src.text_field, limit=limit))
    return out


def pipeline(cfg: BuildConfig, out: str) -> list:
    from datatrove.pipeline.writers import JsonlWriter
    steps = readers(cfg)
    # Readers of several sources chain: each one passes earlier documents through, then adds its own.
    quarantine = JsonlWriter(f"{out}/quarantine", compression=None)
    steps.append(__getattr__("ChainFilter")(cfg.clean.operators, cfg.plugins, exclusion_writer=quarantine))
    steps.append(JsonlWriter(f"{out}/cleaned", output_filename="${rank}.jsonl", compression=None))
    return steps


@entrypoint
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = {"executor": "local", "tasks": "4", "workers": "-1", "out": ""}
    rest = []
    for a in argv:
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key in opts and "=" in a:
            opts[key] = a.split("=", 1)[1]
        else:
            rest.append(a)
    cfg, recipe = parse_args(BuildConfig, rest, prog="data_recipes.scaleout")
    validate(cfg)
    if not opts["out"]:
        raise ConfigError("scaleout: give --out=<folder> for the cleaned output")
    steps = pipeline(cfg, opts["out"])
    if opts["executor"] == "ray":
        from datatrove.executor import RayPipelineExecutor as Executor
    elif opts["executor"] == "local":
        from datatrove.executor import LocalPipelineExecutor as Executor
    else:
        raise ConfigError(f"scaleout: --executor must be local or ray, got {opts['executor']!r}")
    Executor(steps, tasks=int(opts["tasks"]), workers=int(opts["workers"]),
             logging_dir=f"{opts['out']}/logs").run()
    print(f"cleaned -> {opts['out']}/cleaned; next (dedupe, tokenizer, shards on one machine):\n"
          f"  python -m data_recipes.build {recipe} data_root={opts['out']} "
          f"\"sources=[{{path: cleaned/*.jsonl}}]\" \"clean.operators=[]\"")


if __name__ == "__main__":
    main()
