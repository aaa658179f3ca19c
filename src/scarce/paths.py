"""Where scarce keeps caches: $SCARCE_HOME, else ~/.cache/scarce."""

import os
from pathlib import Path


def scarce_home() -> Path:
    return Path(os.environ.get("SCARCE_HOME", Path.home() / ".cache" / "scarce"))
