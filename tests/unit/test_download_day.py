"""`day3 --profile gpu` with a fake NVML (one H100) and the local test hub as the endpoint:
the download step runs before serve, with the real huggingface_hub client, and serve is
given the downloaded path with --served-model-name the repository id. The server itself is
tests/fakes/fake_vllm_server.py, started with the argument list the lab built."""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from fakes.local_hub import LocalHub, small_model
from rich.console import Console

from lab.commands import run_day
from lab.deliver.deploy_notes import render_deploy_notes
from lab.deliver.gather import gather
from lab.record.logbook import PASS
from lab.record.session import Lab
from lab.record.values import DownloadValues
from lab.vllm import hub as hubmod
from lab.vllm import process as server
from tests.fakes import fake_pynvml
from tests.fakes.fake_openai_stream import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE_VLLM = ROOT / "tests" / "fakes" / "fake_vllm_server.py"
REPO = "lab-test/tiny-model"


@pytest.fixture(autouse=True)
def _isolated_client(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_day3_on_gpu_downloads_before_serve_and_serves_the_local_copy(tmp_path, monkeypatch):
    from lab.vllm import env as vllm_env
    from lab.vllm import metrics
    monkeypatch.setattr(metrics, "scrape",
                        lambda *a, **kw: (ROOT / "tests/fixtures/metrics_vllm_0_32.txt").read_text())
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml.one_h100())
    monkeypatch.setattr(vllm_env.VllmEnv, "probe",
                        lambda self, timeout_s=300: {"vllm": "0.26.0", "cuda_available": True})
    port = free_port()
    started: list[list[str]] = []
    real_argv = Lab.serve_argv

    def fake_argv(self, prof, tp=1, extra=None):
        argv = real_argv(self, prof, tp=tp, extra=extra)
        started.append(argv)
        module = argv.index("vllm.entrypoints.openai.api_server")
        return [sys.executable, str(FAKE_VLLM), *argv[module + 1:], "--port", str(port), "--startup-s", "0.2"]

    monkeypatch.setattr(Lab, "serve_argv", fake_argv)
    with LocalHub([small_model(REPO)]) as hub:
        lab = Lab.from_config({"profile": "gpu", "models": {"day3": REPO},
                               "download": {"endpoint": hub.endpoint},
                               "logbook_dir": str(tmp_path / "logbook"),
                               "data_dir": str(tmp_path / "data"), "port": str(port),
                               "lang": "en"},
                              console=Console(file=io.StringIO(), width=200))
        try:
            run_day(lab, "day3", keys=["gpus", "download", "serve"])
        finally:
            server.stop(lab.state_path)
    rows = {s["key"]: s for s in lab.book.steps()}
    assert list(rows)[:3] == ["gpus", "download", "serve"]
    dl = rows["download"]
    assert dl["status"] == PASS, dl["reason"]
    v = dl["values"]
    assert isinstance(v, DownloadValues) and v.model == REPO and v.bytes_fetched > 0
    local = Path(v.local_dir)
    assert (local / "config.json").is_file() and local.is_relative_to(tmp_path / "data")
    (argv,) = started
    assert str(local) in argv and REPO not in argv[:argv.index("--served-model-name")]
    assert argv[argv.index("--served-model-name") + 1] == REPO
    assert rows["serve"]["status"] == PASS, rows["serve"]["reason"]
    md = (lab.logbook_dir / "day3.md").read_text()
    manual = f"{hubmod.cli_name()} download {REPO} --local-dir {local}"
    assert v.manual_command.endswith(manual) and manual in md       # the command by hand, shown
    notes = render_deploy_notes(gather(lab.book, now=time.time()), "en", tmp_path).read_text()
    assert "## Model download" in notes and manual in notes
    assert f"vllm serve {local} --served-model-name {REPO}" in notes
