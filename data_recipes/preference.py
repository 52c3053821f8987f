"""Preference data for DPO: load the common layouts, normalise them to one shape, validate, dedupe.

Every row becomes TRL's conversational preference shape, so the chat template renders prompt and
answers exactly as SFT did:

    {"prompt":   [{"role": "system", ...}?, {"role": "user", "content": ...}, ...],
     "chosen":   [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}]}

Input layouts recognised per row (the file may mix them):
- plain:    {"prompt": str, "chosen": str, "rejected": str, "system"?: str}
            (alpaca-style {"instruction", "input"?} stands in for "prompt")
- ShareGPT: {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}], "chosen": {"from", "value"} | str,
             "rejected": ...}   (LLaMA-Factory's dpo_zh_demo.json; MedicalGPT's dpo_zh_500.jsonl uses strings)
- messages: {"messages": [{"role", "content"}], "chosen": ..., "rejected": ...}, or TRL's implicit-prompt rows
            {"chosen": [messages], "rejected": [messages]} whose shared prefix is the prompt.

A preference recipe (data_recipes/pref_mixes/<name>.yaml) lists sources by local path or hub name
with local alternatives; see `load_recipe`. Bad rows (missing chosen, identical answers, no user
turn, bad JSON) are reported with file and line: `bad_rows="error"` stops, `"skip"` drops and counts.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.errors import UserError
from core.runs import REPO_ROOT, shared_data_root
from data_recipes.sources import json_array_rows, read_utf8

MIX_DIR = Path(__file__).resolve().parent / "pref_mixes"
ROLE_MAP = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
            "bot": "assistant", "system": "system"}


class PreferenceDataError(UserError, ValueError):
    """A preference file or row that cannot be used; the message names the file and line."""
    kind = "data"


@dataclass
class BadRow:
    where: str      # "path:line" (or "hub:name[index]")
    reason: str


@dataclass
class PreferenceData:
    rows: list[dict]                                       # normalised rows (+ "source", "where")
    sources: dict[str, dict] = field(default_factory=dict)  # name -> {"origin", "read", "bad", "kept"}
    bad: list[BadRow] = field(default_factory=list)
    n_duplicates: int = 0

    def trl_rows(self) -> list[dict]:
        return [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in self.rows]

    def content_hash(self) -> str:
        blob = json.dumps(self.trl_rows(), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def report(self) -> dict:
        return {"n_rows": len(self.rows), "n_bad": len(self.bad), "n_duplicates": self.n_duplicates,
                "sources": self.sources, "bad_examples": [f"{b.where}: {b.reason}" for b in self.bad[:20]]}


# ---- reading files -------------------------------------------------------------------------------
def read_records(path: str | Path) -> list[tuple[str, object]]:
    """[(where, parsed record)] from a .jsonl file or a .json array; a record that is not valid JSON is
    returned as a PreferenceDataError so the caller applies its bad-row policy."""
    path = Path(path)
    text = read_utf8(path, PreferenceDataError)
    out: list[tuple[str, object]] = []
    if path.suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{i}", json.loads(line)))
            except json.JSONDecodeError as e:
                out.append((f"{path}:{i}", PreferenceDataError(f"invalid JSON ({e.msg}, column {e.colno})")))
        return out
    return list(json_array_rows(path, text, PreferenceDataError))   # where: file:line: row N


# ---- normalising one row -------------------------------------------------------------------------
def _text(value, what: str) -> str:
    """An answer given as a string, a {"from"/"role", "value"/"content"} dict or a one-message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        v = value.get("value", value.get("content"))
        if isinstance(v, str):
            return v
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return _text(value[-1], what)
    raise PreferenceDataError(f"'{what}' is neither a string nor a message ({type(value).__name__})")


def _messages(turns, what: str) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise PreferenceDataError(f"'{what}' must be a non-empty list of turns")
    out = []
    for j, t in enumerate(turns):
        if not isinstance(t, dict):
            raise PreferenceDataError(f"'{what}[{j}]' is not a mapping")
        role = t.get("role", t.get("from"))
        content = t.get("content", t.get("value"))
        if role not in ROLE_MAP:
            raise PreferenceDataError(f"'{what}[{j}]' has unknown role {role!r}")
        if not isinstance(content, str):
            raise PreferenceDataError(f"'{what}[{j}]' has no text content")
        out.append({"role": ROLE_MAP[role], "content": content})
    return out


def normalise_row(row) -> dict:
    """One raw row -> {"prompt": [...], "chosen": [...], "rejected": [...]}; PreferenceDataError if unusable."""
    if not isinstance(row, dict):
        raise PreferenceDataError(f"a row must be a JSON object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if row.get(key) in (None, "", [], {}):
            raise PreferenceDataError(f"missing '{key}'")
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else None
    if "conversations" in row or "messages" in row:
        key = "conversations" if "conversations" in row else "messages"
        prompt = _messages(row[key], key)
        chosen, rejected = _text(row["chosen"], "chosen"), _text(row["rejected"], "rejected")
    elif "prompt" in row or "instruction" in row:
        if "prompt" in row and isinstance(row["prompt"], list):
            prompt = _messages(row["prompt"], "prompt")
        else:
            text = row.get("prompt", row.get("instruction"))
            if not isinstance(text, str):
                raise PreferenceDataError("'prompt' is not a string")
            if row.get("input"):
                text = f"{text}\n{row['input']}"
            prompt = [{"role": "user", "content": text}]
        chosen, rejected = _text(row["chosen"], "chosen"), _text(row["rejected"], "rejected")
    elif isinstance(row["chosen"], list) and isinstance(row["rejected"], list):
        c, r = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
        n = 0
        while n < min(len(c), len(r)) - 1 and c[n] == r[n]:
            n += 1
        if len(c) != n + 1 or len(r) != n + 1:
            raise PreferenceDataError("implicit-prompt rows must differ only in the last assistant turn")
        prompt, chosen, rejected = c[:n], c[n]["content"], r[n]["content"]
    else:
        raise PreferenceDataError("unrecognised layout (expected prompt/chosen/rejected, "
                                  "conversations + chosen/rejected, or messages + chosen/rejected)")
    if system and not any(m["role"] == "system" for m in prompt):
        prompt = [{"role": "system", "content": system}] + prompt
    users = [m for m in prompt if m["role"] == "user"]
    if not users or not users[-1]["content"].strip() or prompt[-1]["role"] != "user":
        raise PreferenceDataError("the prompt must end with a non-empty user turn")
    if not chosen.strip():
        raise PreferenceDataError("missing 'chosen' (empty text)")
    if not rejected.strip():
        raise PreferenceDataError("missing 'rejected' (empty text)")
    if chosen.strip() == rejected.strip():
        raise PreferenceDataError("'chosen' and 'rejected' are identical")
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def prompt_key(row: dict) -> str:
    """The dedupe key: the non-system prompt turns, whitespace-normalised (system prompts vary per copy)."""
    turns = [f"{m['role']}:{m['content']}" for m in row["prompt"] if m["role"] != "system"]
    return re.sub(r"\s+", " ", "\n".join(turns)).strip()


def pair_key(row: dict) -> str:
    return prompt_key(row) + "\x00" + row["chosen"][0]["content"].strip() + "\x00" + row["rejected"][0]["content"].strip()


# ---- sources and recipes -------------------------------------------------------------------------
def expand_path(path: str, data_root: str | Path | None = None) -> Path:
    """A recipe path with `{data_root}` filled in (empty = core.runs.shared_data_root()); relative
    paths are relative to the repository."""
    root = Path(data_root) if data_root else shared_data_root()
    p = Path(str(path).replace("{data_root}", str(root)))
    return p if p.is_absolute() else REPO_ROOT / p


def _hub_records(source: dict) -> list[tuple[str, object]]:
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise PreferenceDataError(
            f"source '{source['name']}': no local alternative exists ({source.get('local') or 'none listed'}) and "
            f"the hub is offline (HF_DATASETS_OFFLINE=1); download {source['hub']} and list its path under 'local'")
    import datasets  # only a hub source needs it
    ds = datasets.load_dataset(source["hub"], source.get("subset"), split=source.get("split", "train"))
    return [(f"hub:{source['hub']}[{i}]", dict(r)) for i, r in enumerate(ds)]


def resolve_source(source: dict, data_root: Path) -> tuple[str, list[tuple[str, object]]]:
    """(origin, records): an explicit `path`, else the first existing `local` alternative, else the hub."""
    if "path" in source:
        p = expand_path(source["path"], data_root)
        if not p.is_file():
            raise PreferenceDataError(f"source '{source['name']}': file not found: {p}")
        return f"local:{p}", read_records(p)
    locals_ = source.get("local") or []
    for alt in [locals_] if isinstance(locals_, str) else locals_:
        p = expand_path(alt, data_root)
        if p.is_file():
            return f"local:{p}", read_records(p)
    if "hub" in source:
        return f"hub:{source['hub']}", _hub_records(source)
    raise PreferenceDataError(f"source '{source['name']}' names no path, existing local file or hub dataset")


def load_sources(sources: list[dict], data_root: str | Path | None = None, dedupe: str = "prompt",
                 bad_rows: str = "error", max_rows: int = 0) -> PreferenceData:
    """Read, normalise, validate and dedupe `sources` in order (the first copy of a prompt wins)."""
    if dedupe not in ("prompt", "pair", "none"):
        raise PreferenceDataError(f"dedupe must be prompt|pair|none, got {dedupe!r}")
    if bad_rows not in ("error", "skip"):
        raise PreferenceDataError(f"bad_rows must be error|skip, got {bad_rows!r}")
    root = Path(data_root) if data_root else shared_data_root()
    data = PreferenceData(rows=[])
    seen: set[str] = set()
    for i, src in enumerate(sources):
        src = {**src, "name": src.get("name") or Path(str(src.get("path", src.get("hub", f"source{i}")))).stem}
        origin, records = resolve_source(src, root)
        stats = {"origin": origin, "read": len(records), "bad": 0, "duplicates": 0, "kept": 0}
        limit = int(src.get("max_rows", 0) or 0)
        for where, rec in records:
            try:
                if isinstance(rec, Exception):
                    raise rec
                row = normalise_row(rec)
            except PreferenceDataError as e:
                data.bad.append(BadRow(where, str(e)))
                stats["bad"] += 1
                continue
            key = pair_key(row) if dedupe == "pair" else prompt_key(row) if dedupe == "prompt" else None
            if key is not None and key in seen:
                stats["duplicates"] += 1
                data.n_duplicates += 1
                continue
            if key is not None:
                seen.add(key)
            if limit and stats["kept"] >= limit:
                continue
            data.rows.append({**row, "source": src["name"], "where": where})
            stats["kept"] += 1
        data.sources[src["name"]] = stats
    if data.bad and bad_rows == "error":
        listed = "\n".join(f"  {b.where}: {b.reason}" for b in data.bad[:20])
        more = f"\n  ... and {len(data.bad) - 20} more" if len(data.bad) > 20 else ""
        raise PreferenceDataError(f"{len(data.bad)} bad preference row(s) (set data.bad_rows=skip to drop them):\n"
                                  f"{listed}{more}")
    if max_rows and len(data.rows) > max_rows:
        data.rows = data.rows[:max_rows]
    if not data.rows:
        raise PreferenceDataError("no usable preference rows in " + ", ".join(s["origin"] for s in data.sources.values()))
    return data


def recipe_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p if p.is_absolute() or p.exists() else REPO_ROOT / p
    return MIX_DIR / f"{name_or_path}.yaml"


def load_recipe(name_or_path: str, data_root: str | Path | None = None, bad_rows: str | None = None,
                max_rows: int = 0) -> tuple[dict, PreferenceData]:
    """A preference recipe by name (data_recipes/pref_mixes/<name>.yaml) or path -> (recipe, data).

    Recipe keys: `sources` (list of {name, path | local [...] + hub [+ subset, split], max_rows?}),
    `dedupe` (prompt|pair|none), `bad_rows` (error|skip). Paths may use `{data_root}`.
    """
    path = recipe_path(name_or_path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MIX_DIR.glob("*.yaml")))
        raise PreferenceDataError(f"preference recipe not found: {path} (known: {known})")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(recipe) - {"name", "description", "sources", "dedupe", "bad_rows"}
    if unknown or not isinstance(recipe.get("sources"), list) or not recipe["sources"]:
        raise PreferenceDataError(f"{path}: a preference recipe needs a non-empty 'sources' list"
                                  + (f"; unknown keys: {sorted(unknown)}" if unknown else ""))
    recipe.setdefault("name", path.stem)
    data = load_sources(recipe["sources"], data_root, dedupe=recipe.get("dedupe", "prompt"),
                        bad_rows=bad_rows or recipe.get("bad_rows", "error"), max_rows=max_rows)
    return recipe, data
