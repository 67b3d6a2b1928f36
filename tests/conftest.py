"""Shared fixtures. Unit tests use fakes (NVML, HTTP); tests marked `vllm` start a real
vLLM server from the CPU env that `invoke install` makes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab.record.logbook import Logbook  # noqa: E402


@pytest.fixture
def fresh_db(tmp_path) -> Logbook:
    """An empty, migrated logbook in a temporary directory."""
    book = Logbook(tmp_path / "lab.db")
    yield book
    book.close()
