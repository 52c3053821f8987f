"""Run folders: the only hand-off between stages.

    runs/<stage>/<recipe>-<YYYYMMDD-HHMMSS>/
        config.yaml     resolved config
        metrics.jsonl   one JSON object per logged step
        model/          HF format (stages that train)
        manifest.json   written last, atomically: if it exists, the run finished

Parents are always explicit paths. `require_finished` refuses a folder without a manifest, and
`resolve_model_dir` applies it to a run's `model/` subfolder too. Every write of a result, checkpoint
index or manifest goes through `atomic_write_*`. One writer per folder: `Run.create` takes an OS lock
(`RunLock`, fcntl.flock on `<run>/.lock`) held until the run ends, and used as a context manager a
run that is refused before it `begin`s removes the folder it created.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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


# ---- one writer per run folder --------------------------------------------------------------------
class RunLock:
    """An exclusive OS lock on a run folder for the lifetime of one writer: fcntl.flock on
    `<folder>/.lock`. A second writer fails at once, naming the holder; the lock of a process that
    died is released by the OS, so nothing stale is left to clean up (the file stays; its content,
    the holder's pid and start time, is only read while it is locked).

    A writer of several processes (pretraining ranks) takes the main lock in one of them and a
    companion `<folder>/.lock.<tag>` in each other one; the main lock is refused while any companion
    is held, so an orphaned rank keeps the folder busy too. `lock_file` puts the lock elsewhere (a
    data build, whose folder is swapped in at the end, locks `runs/data/.<name>.lock`).

    As a context manager, a block that fails removes the lock file and the folders that `acquire`
    made for it, each only if nothing else was written there (an eval refused before its first
    prediction leaves no `runs/eval/<model>/` behind)."""

    def __init__(self, folder: str | Path, lock_file: str | Path | None = None):
        self.folder = Path(folder)
        self.file = Path(lock_file) if lock_file else self.folder / ".lock"
        self._f = None
        self._made: list[Path] = []        # folders acquire() created, innermost first
        self._new_file = False

    def acquire(self) -> "RunLock":
        self._made = [a for a in self.file.parents if not a.exists()]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._new_file = not self.file.exists()
        f = open(self.file, "a+", encoding="utf-8")
        busy = None if _try_flock(f) else self.file
        if busy is None and self.file.name == ".lock":
            busy = next((c for c in sorted(self.file.parent.glob(".lock.*")) if _held(c)), None)
        if busy is not None:
            f.close()
            raise in_use_error(self.folder, _holder(busy))
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "started": now_iso(), "command": " ".join(sys.argv)}) + "\n")
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            self._f.close()          # closing the descriptor drops the flock
            self._f = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._new_file and self._f is not None:
            self.file.unlink(missing_ok=True)     # still held: no one else can have taken it meanwhile
            for d in self._made:
                try:
                    d.rmdir()
                except OSError:
                    break
        self.release()


def in_use_error(folder: Path, holder: str) -> RunError:
    return RunError(f"{folder} is in use by {holder}; wait for it to end or stop it (the lock goes with the process)")


def lock_holder(folder: str | Path) -> str | None:
    """Who holds a run folder's lock (the main one or a companion), or None when it is free; a
    probe that takes nothing (pretrain/preflight.py asks before any worker starts)."""
    folder = Path(folder)
    for f in [folder / ".lock", *sorted(folder.glob(".lock.*"))]:
        if f.is_file() and _held(f):
            return _holder(f)
    return None


def _try_flock(f) -> bool:
    import fcntl
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _held(path: Path) -> bool:
    """Whether another process holds the lock on `path` (probed by taking and dropping it)."""
    try:
        with open(path, "a+", encoding="utf-8") as f:
            return not _try_flock(f)
    except OSError:
        return False


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} (started {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def die_with_parent() -> None:
    """End this process as soon as its parent dies. For workers of a launcher such as torchrun,
    which starts them in their own session: a SIGKILL of the launcher (the OOM killer, a kill -9 of
    make) would otherwise leave them training on as orphans, beside the next command's writer.
    Linux: PR_SET_PDEATHSIG; elsewhere a watchdog thread that polls the parent pid."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0:     # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:                           # it died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# ---- run folders -------------------------------------------------------------------------------
class Run:
    """A run folder being written. Create with `Run.create` (which locks it), end with `finish`.

    As a context manager it releases the lock however the block ends, and a start refused before
    `begin()` (a bad value, data that does not match, the run in use) removes the folder if this
    start created it; an existing folder is never touched. After `begin()` (training started) a
    failure leaves the folder for inspection or resume."""

    def __init__(self, path: Path, stage: str, recipe: str, created: bool = False):
        self.path = Path(path)
        self.stage = stage
        self.recipe = recipe
        self.started = now_iso()
        self.created = created           # this start made the folder (so a refusal may remove it)
        self.began = False
        self.lock: RunLock | None = None
        self._made_parents: list[Path] = []   # folders above it that this start made (innermost first)

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
        made_parents = [a for a in path.parents if not a.exists()]     # removed again by discard, if empty
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()           # atomic: of two starts racing for a new folder only one "created" it
            created = True
        except FileExistsError:
            created = False
        run = cls(path, stage, recipe, created=created)
        run._made_parents = made_parents
        try:
            run.lock = RunLock(path).acquire()
        except RunError:
            run.discard()
            raise
        return run

    def begin(self) -> None:
        """Training starts: from here on a failure leaves the (unfinished) folder in place."""
        self.began = True

    def discard(self) -> None:
        """Remove the folder if this start created it and nothing was trained into it yet."""
        if self.created and not self.began:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self._made_parents:     # each kept if anything else is in it
                try:
                    parent.rmdir()
                except OSError:
                    break

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.discard()
        finally:
            self.release()

    def write_config(self, cfg) -> None:
        atomic_write_text(self.path / "config.yaml", dump_yaml(cfg))
        self._config_sha = config_hash(cfg)

    def finish(self, **fields) -> dict:
        """Write manifest.json last and atomically, and release the lock. `fields` adds
        stage-specific entries (parent, data_recipe, tokenizer_sha256, steps, tokens_seen, ...)."""
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
        self.began = True
        self.release()
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


RUN_MARKERS = ("config.yaml", "metrics.jsonl", "manifest.json")     # files only a run folder has


def _looks_like_run(p: Path) -> bool:
    return p.is_dir() and ((p / "model").is_dir() or any((p / n).is_file() for n in RUN_MARKERS))


def run_folder(path: str | Path) -> Path | None:
    """The run folder a model path belongs to: the path itself when it is a run folder, its parent
    when it is a folder inside one (`runs/sft/x/model`), else None (an HF folder or a hub id)."""
    p = Path(path)
    if not p.is_dir():
        return None
    if _looks_like_run(p):
        return p
    if _looks_like_run(p.parent):
        return p.parent
    return None


def resolve_model_dir(path: str | Path) -> tuple[Path, dict | None]:
    """A finished run folder -> (its model/ folder, its manifest); a folder inside a run folder
    (`<run>/model`) -> (itself, the run's manifest): an unfinished run is refused however it is
    named; an HF model folder -> (itself, None). The parent to record is `run_folder(path)`.

    Anything else (a hub id) is returned unchanged for `from_pretrained` to resolve.
    """
    p = Path(path)
    run = run_folder(p)
    if run is not None:
        manifest = require_finished(run)
        model = run / "model" if run == p else p
        if not (model / "config.json").is_file():
            raise RunError(f"{p} has no model/config.json: this run did not export a model" if run == p else
                           f"{model} has no config.json: not a model folder of {run}")
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
