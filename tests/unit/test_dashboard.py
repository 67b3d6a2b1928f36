"""The dashboard: one self-contained HTML page (plots as data: URIs, no external resource),
every DB string HTML-escaped, no API key; prometheus.yml for the servers started; and the
page rendered in headless Chromium (the learner's "监控 Dashboard 截图")."""
import base64
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab.deliver import dashboard, outputs, prometheus
from lab.deliver.gather import gather
from tests.fakes.fake_logbook import HOSTILE, LEAKED_KEY, add_hostile, cpu_logbook, gpu_logbook


def render(book, out: Path, lang="en") -> str:
    return dashboard.render_dashboard(gather(book, now=1.0e9), lang, out).read_text()


def records(book):
    return gather(book, now=1.0e9, measurements=False)


def test_the_page_is_self_contained(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    html = render(fresh_db, tmp_path)
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    assert "url(" not in html
    png = base64.b64decode(refs[0].split(",", 1)[1])
    assert png.startswith(b"\x89PNG")
    assert len(refs) == 4  # timeline, sweep, distribution, offline


def test_the_page_shows_the_recorded_figures(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    html = render(fresh_db, tmp_path)
    assert "vLLM monitoring dashboard" in html
    assert "2,203,648" in html            # KV-cache tokens of the benchmarked server
    assert "94.1 %" in html               # peak memory used under load
    assert "76.9×" in html                # vLLM ÷ HF output throughput
    assert "vllm:kv_cache_usage_perc" in html
    assert "job_name: &#34;vllm&#34;" in html or 'job_name: "vllm"' in html


def test_missing_pieces_name_the_task_to_run(fresh_db, tmp_path):
    cpu_logbook(fresh_db)
    html = render(fresh_db, tmp_path, lang="zh")
    assert "尚未测量 — 请运行 `invoke bench`" in html
    assert "尚未测量 — 请运行 `invoke compare`" in html
    assert "CPU 配置不适用" in html and "进程树 RSS" in html


def test_db_text_is_html_escaped_and_no_api_key_appears(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    add_hostile(fresh_db)
    html = render(fresh_db, tmp_path)
    assert "<script>" not in html and HOSTILE not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert LEAKED_KEY not in html


def test_prometheus_config_scrapes_the_servers_started(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    text = prometheus.write_prometheus(records(fresh_db), tmp_path).read_text()
    assert 'metrics_path: "/metrics"' in text
    # the TP=2 server bound 0.0.0.0: scraped on 127.0.0.1; newest first
    assert text.index('targets: ["127.0.0.1:8001"]') < text.index('targets: ["127.0.0.1:8000"]')
    assert 'model: "Qwen/Qwen2.5-14B-Instruct"' in text
    yaml = pytest.importorskip("yaml")
    cfg = yaml.safe_load(text)
    job = cfg["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert [s["targets"] for s in job["static_configs"]] == [["127.0.0.1:8001"], ["127.0.0.1:8000"]]


def test_prometheus_config_without_a_server_says_so(fresh_db, tmp_path):
    text = prometheus.prometheus_yaml(records(fresh_db), "127.0.0.1:8123")
    assert "No server recorded yet" in text and '["127.0.0.1:8123"]' in text


def test_prometheus_config_skips_a_host_that_is_not_an_address(fresh_db):
    add_hostile(fresh_db)
    text = prometheus.prometheus_yaml(records(fresh_db))
    assert "evil" not in text and LEAKED_KEY not in text


def _screenshot(html_path: Path, png: Path) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={png}",
             "--window-size=1280,2000", html_path.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install -y chromium; "
                           ".ci/run installs it)")
def test_dashboard_renders_in_headless_chromium(fresh_db, tmp_path):
    gpu_logbook(fresh_db)
    out = tmp_path / "logbook"
    outputs.render_all(fresh_db, "en", out)
    shot = Path(os.environ.get("LAB_SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    proc = _screenshot(out / "dashboard.html", shot)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
    from matplotlib.image import imread
    pixels = imread(str(shot))
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # a page was drawn, not a blank window
    # the dark header band at the top, the light page below it
    assert pixels[10, 10, :3].mean() < 0.3 and pixels[300, 10, :3].mean() > 0.8
