"""A lab session: the resolved options, profile, logbook and vLLM env that steps share."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lab.core import config as cfgmod
from lab.core.errors import ConfigError
from lab.core.net import base_url
from lab.record.logbook import Logbook
from lab.vllm import hub
from lab.vllm.env import VllmEnv, preload_env, resolve
from lab.vllm.launch import Profile, build_argv
from lab.vllm.models import REHEARSAL_CONFIGS, TINY_MODEL


def detect_profile(nvml_module: Any = None) -> tuple[str, str]:
    """("gpu", why) when NVML finds a GPU, else ("cpu", why)."""
    from lab.measure import nvml

    ok, reason = nvml.nvml_available(nvml_module)
    if ok and nvml.gpu_count(nvml_module) > 0:
        return "gpu", "NVML found a GPU"
    return "cpu", reason or "NVML found no GPU"


@dataclass
class Lab:
    cfg: dict[str, Any]
    profile_name: str
    console: Console = field(default_factory=lambda: Console(highlight=False))
    _book: Logbook | None = None
    #: Server environment variables added by a known fix (`--fix auto`), for later starts.
    fix_env: dict[str, str] = field(default_factory=dict)
    #: Known fixes applied this session (lab.record.values.FixApplied); their flags go to
    #: later starts (see extra_args).
    fixes: list[Any] = field(default_factory=list)
    #: The fix the next `serve` start carries (set by the plan runner before a retry).
    pending_fix: Any = None
    #: The last stop's report (lab.vllm.process.StopReport), for the terminal.
    last_stop: Any = None

    @classmethod
    def from_config(
        cls, overrides: dict[str, Any] | None = None, console: Console | None = None
    ) -> Lab:
        cfg = cfgmod.validate(cfgmod.merged(overrides))
        name = cfg["profile"]
        if name == "auto":
            name, _ = detect_profile()
        return cls(cfg, name, console or Console(highlight=False))

    # -- places ------------------------------------------------------------------
    @property
    def lang(self) -> str:
        return self.cfg["lang"]

    @property
    def book(self) -> Logbook:
        if self._book is None:
            self._book = Logbook(cfgmod.db_path(self.cfg))
            self._book.recover()
        return self._book

    @property
    def logbook_dir(self) -> Path:
        return cfgmod.logbook_dir(self.cfg)

    @property
    def data_dir(self) -> Path:
        return cfgmod.data_dir(self.cfg)

    @property
    def state_path(self) -> Path:
        return cfgmod.state_path(self.cfg)

    @property
    def env(self) -> VllmEnv:
        return resolve(self.data_dir, self.profile_name, self.cfg["python"])

    @property
    def url(self) -> str:
        return base_url(self.cfg["host"], self.cfg["port"])

    @property
    def api_key(self) -> str | None:
        return self.cfg["api_key"] or None

    @property
    def has_gpu(self) -> bool:
        return self.profile_name in ("gpu", "rehearsal")

    def no_gpu_reason(self) -> str:
        return "no NVIDIA GPU: CPU profile"

    # -- models ------------------------------------------------------------------
    def profile(self, day: str = "day3", tp: int = 1, model: str | None = None) -> Profile:
        """What to serve for `day` on this profile."""
        wanted = model or self.cfg["models"][day]
        if self.profile_name == "gpu":
            local = self.downloaded(wanted)  # `invoke download` made a verified copy
            return Profile(
                "gpu", str(local) if local else wanted, served_model_name=wanted if local else None
            )
        if self.profile_name == "rehearsal":
            if model and Path(model).exists():
                return Profile("rehearsal", model, load_format="dummy")
            if wanted not in REHEARSAL_CONFIGS:
                raise ConfigError(
                    f"no shipped rehearsal config for {wanted}; "
                    f"choose one of {', '.join(REHEARSAL_CONFIGS)}"
                )
            shipped = self.data_dir / "models" / f"rehearsal-{REHEARSAL_CONFIGS[wanted]}"
            return Profile("rehearsal", str(shipped), served_model_name=wanted, load_format="dummy")
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(self.cfg["cpu"]["kvcache_space_gib"]),
            **preload_env(self.env, self.cfg["cpu"]["preload"]),
        }
        if tp > 1:
            # Without it TP>1 fails with "Not enough allowed NUMA nodes to bind threads".
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i) for i in range(tp))
        return Profile(
            "cpu", model or str(self.data_dir / "models" / TINY_MODEL), env=env, has_gpu=False
        )

    def download_dir(self, repo_id: str) -> Path:
        """Where `invoke download` puts a repository: <download.models_dir>/<org>/<name>."""
        root = self.cfg["download"]["models_dir"]
        return hub.default_local_dir(
            Path(root).expanduser() if root else self.data_dir / "models", repo_id
        ).absolute()

    def downloaded(self, repo_id: str) -> Path | None:
        """The verified local copy of a hub repository, if `invoke download` made one (read
        from its stamp: no hub call, no file hashed)."""
        if hub.looks_local(repo_id):
            return None
        path = self.download_dir(repo_id)
        return path if hub.has_stamp(path, repo_id) else None

    def extra_args(self, tp: int | None = None) -> list[str]:
        """The user's extra vLLM flags, then those of the known fixes applied this session
        (`--fix auto`) that hold for a start with `tp` (a TP-only fix skips TP=1)."""
        fixed = [a for fix in self.fixes if tp is None or tp >= fix.min_tp for a in fix.args]
        return [*shlex.split(self.cfg["extra_args"] or ""), *fixed]

    def serve_argv(self, prof: Profile, tp: int = 1, extra: list[str] | None = None) -> list[str]:
        """The vLLM server's argument list for `prof` with this session's options."""
        cfg = self.cfg
        return build_argv(
            str(self.env.python),
            prof,
            host=cfg["host"],
            port=cfg["port"],
            max_model_len=cfg["max_model_len"],
            gpu_memory_utilization=cfg["gpu_memory_utilization"],
            tp=tp,
            api_key=self.api_key,
            extra=[*(extra or []), *self.extra_args(tp)],
        )

    # -- stopping: the tree ended and its memory handed back ---------------------------
    def release_wait(self) -> Any:
        """On a GPU profile, the wait for NVML to show a stopped server's memory released
        (lab.vllm.process.ReleaseWait); None on the cpu profile."""
        if not self.has_gpu:
            return None
        from lab.measure import nvml

        timeout_s = float(self.cfg.get("release_timeout_s", 120))

        def wait(state: Any) -> tuple[float | None, list[str]]:
            baseline = state.gpu_baseline_mib or {}
            indices = [int(i) for i in baseline] or None
            return nvml.wait_released(indices, baseline, timeout_s=timeout_s)

        return wait

    def gpu_baseline(self) -> dict[str, float] | None:
        """NVML used MiB per GPU before a server starts (the release wait's reference)."""
        if not self.has_gpu:
            return None
        from lab.measure import nvml

        return nvml.used_mib_by_index() or None

    def stop_server(self, grace_s: float = 30, *, loud: bool = True, why: str = "stop") -> Any:
        """End the tracked server's whole tree and wait for its GPU memory to be released
        (lab.vllm.process.StopReport); the hand-back is recorded on the server's row
        (`stopped_at`, and `facts.stop` with its seconds). With `loud`, processes that
        survive SIGKILL or memory still held raise GpuMemoryHeld naming them."""
        from lab.core.errors import GpuMemoryHeld
        from lab.vllm import process as server

        state = server.load(self.state_path)
        report = server.stop_tree(self.state_path, grace_s, wait_released=self.release_wait())
        if state is not None and state.server_id is not None and report.pids:
            self._record_stop(state.server_id, report, why)
        self.last_stop = report
        if loud and not report.clean:
            raise GpuMemoryHeld(held_message(report))
        return report

    def _record_stop(self, server_id: int, report: Any, why: str) -> None:
        import time

        from lab.record.values import ServeValues, StopRecord

        row = next((s for s in self.book.servers() if s["id"] == server_id), None)
        if row is None:
            return
        fields: dict[str, Any] = {"stopped_at": time.time()}
        facts = row.get("facts")
        if isinstance(facts, ServeValues) and facts.stop is None:
            facts.stop = StopRecord.of(report, why)
            fields["facts"] = facts
        self.book.update_server(server_id, **fields)

    def apply_fix(self, fix: Any) -> None:
        """Make later server starts carry a known fix (lab.record.values.FixApplied): its lab
        settings, its vLLM flags, its environment variables."""
        for key, value in fix.settings.items():
            self.cfg[key] = value
        self.fixes.append(fix)
        self.fix_env.update(fix.env)


def held_message(report: Any) -> str:
    """One line naming what a stop could not hand back."""
    parts = []
    if report.survivors:
        parts.append(f"processes still alive after SIGKILL: {', '.join(report.survivors)}")
    if report.held:
        parts.append(f"GPU memory still held: {'; '.join(report.held)}")
    return "the vLLM server was not handed back: " + "; ".join(parts)
