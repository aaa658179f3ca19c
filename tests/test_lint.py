"""ruff (pycodestyle, pyflakes, import order, bugbear, pyupgrade; configured in pyproject.toml) passes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_passes_on_the_code_tests_benchmarks_and_evidence():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "evidence"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
