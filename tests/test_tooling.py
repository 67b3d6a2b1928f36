"""The tree's own checks, run by the README's test command (`python -m pytest`): ruff (lint
and format), mypy and import-linter, each as the command a developer would type.

A failure prints the tool's own report. The settings live in pyproject.toml ([tool.ruff],
[tool.mypy], [tool.importlinter]).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The whole tree: lint over the code, its tests and the bench scripts; types over lab/ and
# tasks.py (pyproject's [tool.mypy] files).
RUFF_CHECK_PATHS = ["lab", "tasks.py", "tests", "bench"]
MYPY_ARGS: list[str] = []
FORMAT_PATHS = ["lab", "tasks.py"]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def test_ruff_check():
    """Command line equivalent: `ruff check lab tasks.py tests bench`"""
    proc = _run([sys.executable, "-m", "ruff", "check", "--no-cache", *RUFF_CHECK_PATHS])
    assert proc.returncode == 0, _report(proc)


def test_ruff_format():
    """Command line equivalent: `ruff format --check lab tasks.py`"""
    proc = _run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", *FORMAT_PATHS])
    assert proc.returncode == 0, _report(proc)


def test_mypy():
    """Command line equivalent: `mypy lab tasks.py`"""
    proc = _run([sys.executable, "-m", "mypy", *MYPY_ARGS])
    assert proc.returncode == 0, _report(proc)


def test_import_contracts():
    """Command line equivalent: `lint-imports` (the layers of docs/architecture.md)."""
    script = Path(sysconfig.get_path("scripts")) / "lint-imports"
    lint_imports = str(script) if script.exists() else shutil.which("lint-imports")
    assert lint_imports, "lint-imports is not installed: pip install -e '.[test]'"
    proc = _run([lint_imports, "--no-cache"])
    assert proc.returncode == 0, _report(proc)
    assert "0 broken" in proc.stdout, _report(proc)
