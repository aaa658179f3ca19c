"""Where scarce keeps caches ($SCARCE_HOME, else ~/.cache/scarce), and the check of a place it will write."""

import os
from pathlib import Path

from scarce.errors import ScarceError


def scarce_home() -> Path:
    """$SCARCE_HOME, else ~/.cache/scarce; a ScarceError naming it when it is a file."""
    home = Path(os.environ.get("SCARCE_HOME") or Path.home() / ".cache" / "scarce")
    if home.exists() and not home.is_dir():
        raise ScarceError(f"SCARCE_HOME {home} is a file, not a directory; point SCARCE_HOME at a directory")
    return home


def writable_dir(path: Path, what: str) -> Path:
    """`path` as a directory this process can write in, made (with its parents) if missing; otherwise a
    ScarceError naming `what` and the place. Called before any work that will write there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ScarceError(f"{what} {path} is a file, not a directory") from None
    except OSError as e:
        raise ScarceError(f"{what} {path} cannot be created: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ScarceError(f"{what} {path} is read-only; give a directory you can write to")
    return path
