"""Write files so that a crash leaves either the old file or the new one, never half of one."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide results from other users
_DIR_MODE = 0o777 & ~_umask()


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A fresh hidden directory under `parent` to build in and rename into place, with mkdir's usual mode."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    path.chmod(_DIR_MODE)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
