"""Checkpoints: atomic writes, `--resume auto`, keep-last-K rotation, RNG state.

Layout under `run_dir/checkpoints/`:

    step_00000500/            a complete checkpoint
        ds/                   DeepSpeed's files (model + partitioned optimizer states)
        rng/rank_00000.safetensors   torch/CUDA/numpy/python RNG of each rank
        experts/ep_rank_00000.safetensors   with deepspeed.expert_parallel > 1: the fp32
                              experts of each expert-parallel rank (expert_parallel.py)
        trainer_state.json    step, data-stream position, model config, resolved config
        config.yaml           the resolved config, for humans
        complete              marker, written last
    .tmp-step_00001000/       a save in progress, or one a crash interrupted: never resumed

A save writes everything into `.tmp-NAME/`, flushes every file and the folder to disk (fsync),
writes the marker, and renames the folder to `NAME` (one atomic rename on a POSIX file system),
so a crash or power loss at any point leaves the previous checkpoint as the newest complete one.
A disk that fills up stops the run with "no space left on device" and the folder; leftover
`.tmp-*` folders are removed when the next run starts. `--resume auto` checks the newest
complete checkpoint's files before using it and falls back, with a warning, to the previous
one when they cannot be read. Multi-node runs need `run_dir` on a shared file system.

Trust: DeepSpeed stores its states with `torch.save` (pickle). We only ever load our own
DeepSpeed folders written by this trainer, which are trusted like the code itself; the RNG
states and trainer state we add are safetensors and JSON, which cannot execute code.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from specaware.training import distributed, expert_parallel
from specaware.faults import fault_point

log = logging.getLogger(__name__)

__all__ = ["save", "load", "list_complete", "find_latest", "resolve_resume", "rotate",
           "rng_state", "set_rng_state", "read_state", "remove_partial", "unreadable",
           "CheckpointReadError", "CheckpointWriteError", "DS_TAG", "MARKER"]

CKPT_SUBDIR = "checkpoints"
DS_TAG = "ds"
MARKER = "complete"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8,})$")


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, ...); names the folder and the fix."""


class CheckpointReadError(RuntimeError):
    """A checkpoint whose files cannot be read; names the folder and the fix."""


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def is_complete(path: Path) -> bool:
    return _NAME.match(path.name) is not None and (path / MARKER).is_file() \
        and (path / STATE_FILE).is_file()


def list_complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run (or of a `checkpoints/` folder), oldest first."""
    root = Path(run_dir)
    if (root / CKPT_SUBDIR).is_dir():
        root = root / CKPT_SUBDIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def find_latest(run_dir: str | Path) -> Path | None:
    done = list_complete(run_dir)
    return done[-1] if done else None


def resolve_resume(resume: str | None, run_dir: str | Path, flag: str = "--resume"
                   ) -> Path | None:
    """`None`/"" -> fresh start; "auto" -> newest complete checkpoint whose files can be read
    (falling back to older ones with a warning), or a fresh start when there is none; a path ->
    that checkpoint (a run folder picks its newest), which must be complete and readable."""
    if not resume or resume == "none":
        return None
    if resume == "auto":
        done = list_complete(run_dir)
        for path in reversed(done):
            problem = unreadable(path)
            if problem is None:
                log.info("resume auto: %s", path)
                return path
            log.warning("resume auto: %s cannot be read (%s); falling back to the previous "
                        "checkpoint", path, problem)
        if done:
            raise CheckpointReadError(
                f"--resume auto: none of the {len(done)} complete checkpoints in {run_dir} can "
                f"be read (newest: {done[-1]}); delete the damaged ones or start a new run_dir")
        log.info("resume auto: no complete checkpoint in %s, fresh start", run_dir)
        return None
    path = Path(resume)
    if not is_complete(path):
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(
                f"{flag} {resume}: not a complete checkpoint (no '{MARKER}' marker) and no "
                f"complete checkpoint below it; pass a step_* folder, a run folder, or 'auto'")
        path = latest
    problem = unreadable(path)
    if problem is not None:
        raise CheckpointReadError(f"{flag} {resume}: {path} cannot be read ({problem}); pass "
                                  "an older step_* folder" + (", or --resume auto to fall back"
                                                              if flag == "--resume" else ""))
    return path


def unreadable(ckpt: str | Path) -> str | None:
    """Why checkpoint folder `ckpt` cannot be resumed from, or None. Checks the trainer state,
    the RNG files' headers and the zip structure of every DeepSpeed file (a truncated
    file lacks its central directory or has entries past its end), without unpickling."""
    ckpt = Path(ckpt)
    try:
        if not isinstance(read_state(ckpt).get("step"), int):
            return f"{STATE_FILE} has no integer 'step'"
    except (OSError, ValueError) as e:
        return f"{STATE_FILE}: {type(e).__name__}: {e}"
    files = sorted((ckpt / DS_TAG).glob("*.pt"))
    if not files:
        return f"no DeepSpeed files in {ckpt / DS_TAG}"
    for f in files:
        problem = _zip_problem(f)
        if problem:
            return f"{f.name}: {problem}"
    for f in sorted((ckpt / "rng").glob("*.safetensors")):
        try:
            from safetensors import safe_open
            with safe_open(str(f), "pt"):
                pass
        except Exception as e:  # noqa: BLE001 - any failure means unreadable
            return f"{f.name}: {type(e).__name__}: {e}"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive: a readable one has its central directory and every
    entry inside the file."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"entry {info.filename} ends past the end of the file"
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        return f"not a complete torch archive ({type(e).__name__}: {e})"
    return None


def remove_partial(run_dir: str | Path) -> list[Path]:
    """Delete `.tmp-step_*` leftovers of saves that a crash or a full disk interrupted; call on
    the main rank when a run starts. Returns what was removed."""
    root = Path(run_dir) / CKPT_SUBDIR
    removed = [p for p in root.glob(".tmp-step_*") if p.is_dir()] if root.is_dir() else []
    for p in removed:
        log.warning("removing %s, left by an interrupted checkpoint save", p)
        shutil.rmtree(p, ignore_errors=True)
    return removed


# --- RNG -------------------------------------------------------------------------------------

def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of every RNG this process draws from, safetensors-ready."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    meta = {"numpy": json.dumps([name, int(pos), int(has_gauss), float(cached)]),
            "python": json.dumps(random.getstate())}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = json.loads(meta["numpy"])
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))
    version, internal, gauss = json.loads(meta["python"])
    random.setstate((version, tuple(internal), gauss))


def _rng_path(ckpt: Path, rank: int) -> Path:
    return ckpt / "rng" / f"rank_{rank:05d}.safetensors"


# --- save ------------------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def save(engine, run_dir: str | Path, step: int, state: dict, env, *, keep_last: int = 0,
         keep_every: int = 0) -> Path:
    """Write checkpoint `step` atomically and durably. Call on EVERY rank (DeepSpeed gathers
    inside).

    `state` (JSON-able, from rank 0) is stored as trainer_state.json with `step` added.
    Returns the final folder. A full disk raises CheckpointWriteError naming the folder.
    """
    root = Path(run_dir) / CKPT_SUBDIR
    final = root / step_name(step)
    tmp = root / f".tmp-{final.name}"
    if env.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    distributed.barrier()
    with _reporting_write_errors(tmp, env):
        engine.save_checkpoint(str(tmp), tag=DS_TAG, client_state={"step": step},
                               save_latest=False)
        expert_parallel.save_experts(engine.module, tmp)     # experts/: split experts, if any
        tensors, meta = rng_state()
        _rng_path(tmp, env.rank).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(_rng_path(tmp, env.rank)), metadata=meta)
        _fsync_tree(tmp)            # each rank flushes what it wrote (multi-node: its own node)
    distributed.barrier()
    fault_point("save", step)       # tests: die here, after the heavy files, before the marker
    if env.is_main:
        with _reporting_write_errors(tmp, env):
            _publish(tmp, final, step, state, env.world_size)
        rotate(root, keep_last=keep_last, keep_every=keep_every)
    distributed.barrier()
    return final


@contextlib.contextmanager
def _reporting_write_errors(tmp: Path, env):
    """Turns a full disk into CheckpointWriteError ("no space left on device" and where) and
    removes the partial folder (main rank), so the previous checkpoint stays the newest."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        text = str(error)
        if not (getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text
                or "file write failed" in text):
            raise
        free = shutil.disk_usage(tmp.parent).free if tmp.parent.exists() else 0
        raise CheckpointWriteError(
            errno.ENOSPC, f"no space left on device while writing checkpoint {tmp} "
            f"({free / 2**30:.2f} GiB free on its file system); free space or set "
            "checkpoint.run_dir elsewhere, then resume with --resume auto (the previous "
            "checkpoint is intact)") from None


def _fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder (so their entries are durable)."""
    dirs = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            _fsync_path(path)
    for d in dirs:
        _fsync_path(d)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path, step: int, state: dict, world_size: int) -> None:
    _write_json(tmp / STATE_FILE, {**state, "step": step})
    if "config" in state:
        with open(tmp / "config.yaml", "w") as f:
            yaml.safe_dump(state["config"], f, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
    _fsync_path(tmp)                # the entries above are durable before the marker exists
    _write_json(tmp / MARKER, {"step": step, "world_size": world_size, "time": time.time()})
    _fsync_path(tmp)
    if final.exists():              # the same step saved again after a resume
        _remove(final)
    os.rename(tmp, final)
    _fsync_path(final.parent)       # the rename itself survives a power loss
    log.info("checkpoint %s written", final)


def _remove(path: Path) -> None:
    """Marker first, so a deletion cut short never leaves something that looks complete."""
    (path / MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def rotate(root: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints (0 keeps all), sparing steps
    that are multiples of `keep_every`, plus leftovers of interrupted saves. Returns deleted."""
    root = Path(root)
    removed = [p for p in root.glob(".tmp-step_*") if p.is_dir()]
    done = list_complete(root)
    if keep_last > 0:
        for p in done[:-keep_last]:
            step = int(_NAME.match(p.name).group(1))
            if not (keep_every and step % keep_every == 0):
                removed.append(p)
    for p in removed:
        _remove(p)
    return removed


# --- load ------------------------------------------------------------------------------------

def read_state(ckpt: str | Path) -> dict:
    with open(Path(ckpt) / STATE_FILE) as f:
        return json.load(f)


def _layout_text(layout: list[dict]) -> str:
    return ", ".join(f"{g['name']} {g['tensors']} tensors / {g['elements']} values"
                     for g in layout)


def check_groups(state: dict, layout: list[dict], ckpt: str | Path) -> None:
    """CheckpointReadError naming both layouts when the checkpoint's optimizer groups (stored
    by `save` since they were recorded; older checkpoints are not checked here) differ from the
    ones this run builds (training.optim.group_layout)."""
    saved = state.get("optimizer_groups")
    if saved is None or saved == layout:
        return
    raise CheckpointReadError(
        f"{ckpt}: its optimizer state has the groups [{_layout_text(saved)}], this run builds "
        f"[{_layout_text(layout)}]: written by another specaware version or with another model "
        f"or optimiser setting, it cannot be resumed. Resume with the config it was written "
        f"with, or `specaware export` its run folder and start a new run")


def load(engine, ckpt: str | Path, env) -> dict:
    """Restore engine (weights, optimizer, scheduler) and this rank's RNG; return the state.

    Call on every rank. A rank without a saved RNG file (the world grew) keeps its fresh seed.
    """
    ckpt = Path(ckpt)
    try:
        path, _ = engine.load_checkpoint(str(ckpt), tag=DS_TAG, load_optimizer_states=True,
                                         load_lr_scheduler_states=True)
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        if "parameter group" in first:   # torch: the saved groups do not fit this optimizer
            raise CheckpointReadError(
                f"{ckpt}: its optimizer state does not fit this run's parameter groups "
                f"({first}): written by another specaware version or with another model or "
                f"optimiser setting, it cannot be resumed. Resume with the config it was "
                f"written with, or `specaware export` its run folder and start a new run") from e
        raise CheckpointReadError(f"{ckpt}: DeepSpeed could not read it ({type(e).__name__}: "
                                  f"{first}); delete it (--resume auto then picks the previous "
                                  "checkpoint) or pass an older step_* folder") from e
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint in {ckpt / DS_TAG}; the folder is "
                           "damaged: delete it (resume auto then picks the previous one)")
    expert_parallel.load_experts(engine.module, ckpt)    # DeepSpeed left rank 0's in each
    state = read_state(ckpt)
    if state.get("world_size", env.world_size) != env.world_size:
        log.warning("checkpoint %s was written by %s processes, resuming on %d: the data "
                    "stream and RNG differ from an uninterrupted run", ckpt,
                    state.get("world_size"), env.world_size)
    rng = _rng_path(ckpt, env.rank)
    if rng.is_file():
        from safetensors import safe_open
        with safe_open(str(rng), "pt") as f:
            meta = f.metadata()
        set_rng_state(load_file(str(rng)), meta)
    return state
