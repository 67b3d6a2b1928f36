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


@pytest.fixture
def fake(request):
    """The fake vLLM server (tests/fakes/fake_openai_stream.py) in a thread: first token
    after 40 ms, then one every 10 ms. `@pytest.mark.parametrize("fake", [FakeConfig(...)],
    indirect=True)` gives a test its own config."""
    from tests.fakes.fake_openai_stream import FakeConfig, FakeServer

    config = getattr(request, "param", None) or FakeConfig(first_token_s=0.040, itl_s=0.010)
    with FakeServer(config) as server:
        yield server
