"""Committed evidence (docs/, examples/) names no absolute path of the machine that produced it: such a path
means nothing on a reader's machine and leaks where the work was done."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_DIRS = ("docs", "examples")
# A path rooted in a home, scratch or work directory (POSIX or macOS), or at a Windows drive.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home|Users)/|\b[A-Za-z]:\\\\?[\w.-]")
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".pdf", ".bin", ".safetensors", ".sqlite", ".npy", ".pt"}


def committed_files() -> list[Path]:
    """The files git tracks under docs/ and examples/; every file there when git is not at hand."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", *COMMITTED_DIRS], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
        files = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout (an unpacked sdist)
        files = [p for d in COMMITTED_DIRS for p in sorted((ROOT / d).rglob("*")) if p.is_file()]
    return [f for f in files if f.is_file() and f.suffix.lower() not in BINARY_SUFFIXES]  # staged deletions: gone


def test_the_pattern_finds_machine_paths_and_nothing_else():
    for text in ['"runs_dir": "/work/studies2/kjv/runs"', "--out /tmp/quick", "/root/.cache", "~ is /home/me/",
                 "/Users/me/corpus.txt", r"C:\Users\me", r'"C:\\data\\x.txt"']:
        assert MACHINE_PATH.search(text), text
    for text in ["docs/studies/kjv/runs.jsonl", "studies/tmp/x", "results/work/", "a/b", "https://example.com/home/"]:
        assert not MACHINE_PATH.search(text), text


def test_no_committed_file_under_docs_or_examples_holds_an_absolute_machine_path():
    found = []
    for path in committed_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.split("\n"), start=1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    more = f"\n... {len(found)} in all" if len(found) > 50 else ""
    assert not found, "absolute machine paths (write them relative, or as names):\n" + "\n".join(found[:50]) + more
