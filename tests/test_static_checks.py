"""Static checks run with the suite: ruff's rule set and mypy's settings from pyproject.toml.

ruff covers the package, tests and benchmarks; mypy the package (``[tool.mypy]``: every function
typed, no implicit re-exports). mypy keeps its cache in ``.mypy_cache``: a first check takes about
15 s of CPU, a repeated one about 2 s.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
