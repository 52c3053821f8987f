"""Run folders: the only hand-off between stages.

    runs/<stage>/<recipe>-<YYYYMMDD-HHMMSS>/
        config.yaml     resolved config
        metrics.jsonl   one JSON object per logged step
        model/          HF format (stages that train)
        manifest.json   written last, atomically: if it exists, the run finished

Parents are always explicit paths. `require_finished` refuses a folder without a manifest.
Every write of a result, checkpoint index or manifest goes through `atomic_write_*`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import config_hash, dump_yaml
from core.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


class RunError(UserError, RuntimeError):
    """A run folder that cannot be used (unfinished, missing, mismatched)."""


def shared_data_root() -> Path:
    """The real-data folder (C-Eval, CMMLU, SFT/DPO samples): $ZHLLM_SHARED_DATA or ../shared/data."""
    return Path(os.environ.get("ZHLLM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@dataclass
class RunOptions:
    """Where a stage writes its run folder."""
    root: str = "runs"            # folder that holds runs/<stage>/...
    name: str = ""                # run folder name; empty = <recipe>-<YYYYMMDD-HHMMSS>


# ---- atomic writes -----------------------------------------------------------------------------
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


# ---- hashing -----------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def sha256_tree(folder: str | Path, pattern: str = "*") -> str:
    """Hash of every file's relative path and content below `folder` (sorted, stable)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob(pattern)):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(folder)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def tokenizer_hash(folder: str | Path) -> str | None:
    folder = Path(folder)
    files = [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


# ---- environment -------------------------------------------------------------------------------
def git_info() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def env_info() -> dict:
    info = {"python": platform.python_version(), "host": platform.node(), "platform": platform.platform()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    for mod in ("transformers", "trl", "peft", "datasets"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- run folders -------------------------------------------------------------------------------
class Run:
    """A run folder being written. Create with `Run.create`, end with `finish`."""

    def __init__(self, path: Path, stage: str, recipe: str):
        self.path = Path(path)
        self.stage = stage
        self.recipe = recipe
        self.started = now_iso()

    @classmethod
    def create(cls, stage: str, recipe: str, options: RunOptions | None = None, resume: bool = False) -> "Run":
        options = options or RunOptions()
        name = options.name or f"{recipe}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        path = Path(options.root) / stage / name
        if path.exists() and not resume:
            if (path / "manifest.json").exists():
                raise RunError(f"{path} is a finished run; choose another run.name")
            if any(path.iterdir()) and not options.name:
                i = 1
                while (Path(options.root) / stage / f"{name}.{i}").exists():
                    i += 1
                path = Path(options.root) / stage / f"{name}.{i}"
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, stage, recipe)

    def write_config(self, cfg) -> None:
        atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
        self._config_sha = config_hash(cfg)

    def finish(self, **fields) -> dict:
        """Write manifest.json last and atomically. `fields` adds stage-specific entries
        (parent, data_recipe, tokenizer_sha256, steps, tokens_seen, protocol, ...)."""
        manifest = {
            "stage": self.stage,
            "run": self.path.name,
            "recipe": self.recipe,
            "parent": None,
            **git_info(),
            "config_sha256": getattr(self, "_config_sha", None),
            "started": self.started,
            "finished": now_iso(),
            "env": env_info(),
        }
        manifest.update(fields)
        tok_dir = self.path / "model"
        if "tokenizer_sha256" not in manifest and tok_dir.is_dir():
            manifest["tokenizer_sha256"] = tokenizer_hash(tok_dir)
        atomic_write_json(self.path / "manifest.json", manifest)
        return manifest


def read_manifest(run_dir: str | Path) -> dict:
    p = Path(run_dir) / "manifest.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from None


def require_finished(run_dir: str | Path, stage: str | None = None) -> dict:
    """The manifest of a finished run; a clear error for a missing or unfinished folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder not found: {run_dir}")
    if not (run_dir / "manifest.json").is_file():
        raise RunError(f"{run_dir} has no manifest.json: it is an unfinished (or crashed) run and "
                       f"cannot be used as a parent. Finish or resume it first.")
    manifest = read_manifest(run_dir)
    if stage and manifest.get("stage") != stage:
        raise RunError(f"{run_dir} is a '{manifest.get('stage')}' run, expected a '{stage}' run")
    return manifest


def resolve_model_dir(path: str | Path) -> tuple[Path, dict | None]:
    """A finished run folder -> (its model/ folder, its manifest); an HF model folder -> (itself, None).

    Anything else (a hub id) is returned unchanged for `from_pretrained` to resolve.
    """
    p = Path(path)
    if p.is_dir() and ((p / "model").is_dir() or (p / "config.yaml").is_file()):
        manifest = require_finished(p)
        model = p / "model"
        if not (model / "config.json").is_file():
            raise RunError(f"{p} has no model/config.json: this run did not export a model")
        return model, manifest
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise RunError(f"{p} is neither a run folder (manifest.json + model/) nor an HF model folder (config.json)")
        return p, None
    if str(path).startswith((".", "/")) or "runs/" in str(path):
        raise RunError(f"model path not found: {path}")
    return Path(str(path)), None  # hub id


def check_tokenizer_files(model_dir: str | Path) -> None:
    """transformers silently returns an empty tokenizer for a folder without tokenizer files."""
    model_dir = Path(model_dir)
    if model_dir.is_dir() and not (model_dir / "tokenizer.json").is_file() and \
            not (model_dir / "tokenizer_config.json").is_file():
        raise RunError(f"{model_dir} has no tokenizer files (tokenizer.json / tokenizer_config.json); "
                       f"save the tokenizer with the model")


def lineage(run_dir: str | Path, max_depth: int = 16) -> list[dict]:
    """[manifest of run_dir, its parent's, ...] following explicit parent paths."""
    chain = []
    cur: Path | None = Path(run_dir)
    while cur is not None and len(chain) < max_depth:
        if not (cur / "manifest.json").is_file():
            break
        m = read_manifest(cur)
        m["_path"] = str(cur)
        chain.append(m)
        parent = m.get("parent")
        cur = Path(parent) if parent else None
    return chain
