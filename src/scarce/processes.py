"""Whether a process is alive: for run owners, checkpoint writers and a study's driver."""

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this host (another user's counts); a zombie, killed but not yet
    reaped by its parent, counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: state Z in /proc/PID/stat
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
