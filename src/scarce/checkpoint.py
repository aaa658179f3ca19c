"""Checkpoints that are either whole or absent, verified on load.

A checkpoint is a directory `step_00000100/` holding model.safetensors (weights), state.pt (optimizer,
RNG, loader and schedule state) and manifest.json (size and SHA-256 of both). It is built under a hidden
temporary name and renamed into place, so a crash mid-write leaves no directory that looks complete.
Loading checks the manifest; a truncated or corrupt checkpoint is named and skipped for the previous one.
"""

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from scarce.atomic import write_json_atomic
from scarce.errors import ScarceError
from scarce.processes import pid_alive

FILES = ("model.safetensors", "state.pt")


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete-looking checkpoints, newest first."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if p.is_dir()), key=lambda p: p.name, reverse=True)


def save_checkpoint(root: Path, step: int, model_state: dict, state: dict, keep: int, pinned=()) -> Path:
    """Write checkpoint `step`; keep the newest `keep` checkpoints besides those of the `pinned` steps."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    remove_stale_temp_dirs(root)
    tmp.mkdir()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blobs = {
        "model.safetensors": save_safetensors({k: v.detach().contiguous().cpu() for k, v in model_state.items()}),
        "state.pt": buffer.getvalue(),
    }
    manifest = {"step": step, "files": {}}
    for name, blob in blobs.items():
        with open(tmp / name, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        manifest["files"][name] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    write_json_atomic(tmp / "manifest.json", manifest)
    if final.exists():  # re-saving a step (e.g. after a resume) replaces it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    pinned_names = {f"step_{s:08d}" for s in pinned}
    for old in [p for p in checkpoint_dirs(root) if p.name not in pinned_names][keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify_checkpoint(path: Path) -> dict[str, bytes]:
    """The checkpoint's files, checked against the sizes and SHA-256 in its manifest; ScarceError naming
    the file if one is damaged."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        expected_files = {name: manifest["files"][name] for name in FILES}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ScarceError(f"checkpoint {path} has no readable manifest.json ({e})") from None
    blobs = {}
    for name, expected in expected_files.items():
        try:
            blob = (path / name).read_bytes()
        except OSError as e:
            raise ScarceError(f"checkpoint file {path / name} is unreadable ({e})") from None
        if len(blob) != expected["bytes"]:
            raise ScarceError(f"checkpoint file {path / name} is truncated: {len(blob)} of {expected['bytes']} bytes")
        if hashlib.sha256(blob).hexdigest() != expected["sha256"]:
            raise ScarceError(f"checkpoint file {path / name} is corrupt: its SHA-256 does not match the manifest")
        blobs[name] = blob
    return blobs


def remove_stale_temp_dirs(root: Path) -> list[Path]:
    """Delete the half-written checkpoints (`.tmp-step_…-PID`) of writers that are gone: a kill during a
    save leaves one (as large as a checkpoint) that nothing else would ever remove. A writer counts as
    gone when no process has its pid on this host (the run's lock keeps writers of one run to one)."""
    removed = []
    for tmp in root.glob(".tmp-step_*-*"):
        pid = tmp.name.rpartition("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(model state dict, training state) of one checkpoint; ScarceError naming the file if it is damaged."""
    blobs = verify_checkpoint(path)
    try:
        model_state = load_safetensors(blobs["model.safetensors"])
    except Exception as e:  # safetensors raises its own error types
        raise ScarceError(f"checkpoint file {path / 'model.safetensors'} is unreadable ({e})") from None
    try:
        # weights_only: tensors and plain containers; a crafted pickle is refused, not run
        state = torch.load(io.BytesIO(blobs["state.pt"]), weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        raise ScarceError(f"checkpoint file {path / 'state.pt'} is unreadable ({type(e).__name__}: {e})") from None
    return model_state, state


def load_latest_checkpoint(root: Path, warn=print) -> tuple[Path, dict, dict] | None:
    """The newest intact checkpoint under `root`, falling back past damaged ones (each reported via `warn`)."""
    damaged = []
    for path in checkpoint_dirs(root):
        try:
            model_state, state = read_checkpoint(path)
        except ScarceError as e:
            damaged.append(str(e))
            warn(f"{e}; falling back to the previous checkpoint")
            continue
        return path, model_state, state
    if damaged:
        raise ScarceError("no intact checkpoint to resume from:\n  " + "\n  ".join(damaged))
    return None
