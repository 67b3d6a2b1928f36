"""Named exceptions. Each carries one clear line for the user; tasks turn them into
`Exit(str(err), code)` and the step runner records them as a failed step."""

from __future__ import annotations


class LabError(Exception):
    """Base class: `str(err)` is the one line shown to the user."""

    #: One-line remedy shown under the error, when known (e.g. from lab.vllm.diagnose).
    fix: str | None = None
    #: What a step measured before it failed (its lab.record.values type), kept in the
    #: failed step's record by the step runner.
    values: object | None = None

    def __init__(self, message: str, *, fix: str | None = None, evidence: str | None = None):
        super().__init__(message)
        if fix is not None:
            self.fix = fix
        #: A short excerpt (log lines, HTTP status) kept in the logbook.
        self.evidence = evidence


class ConfigError(LabError):
    """A bad option or threshold, rejected before any work starts."""


class NvmlUnavailable(LabError):
    """NVML could not be loaded or initialised (no NVIDIA driver)."""


class VllmEnvMissing(LabError):
    """The vLLM env does not exist or cannot `import vllm`."""


class ModelMissing(LabError):
    """The model path does not exist or lacks config.json."""


class PortBusy(LabError):
    """Something already listens on the server port."""


class ServerDied(LabError):
    """The vLLM server process exited (during startup or later)."""


class GpuMemoryHeld(LabError):
    """A stopped server's processes survived SIGKILL, or its GPU memory stayed held."""


class ServerTimeout(LabError):
    """The vLLM server did not become ready before the timeout."""


class ServerNotRunning(LabError):
    """A step needs a running server and none is recorded or reachable."""


class ApiError(LabError):
    """An HTTP call to the server failed or returned something unusable."""


class HubError(LabError):
    """The model hub (Hugging Face, a mirror, ModelScope) answered with an error."""


class HubUnreachable(HubError):
    """The hub could not be reached (no network, wrong endpoint, offline mode)."""


class RepoGated(HubError):
    """The repository is gated or private (HTTP 401/403): a token with access is needed."""


class RepoNotFound(HubError):
    """No such repository on the hub (or a private one the token cannot see)."""


class RevisionNotFound(HubError):
    """The repository exists but not the revision (branch, tag or commit)."""


class HubClientMissing(HubError):
    """The hub's client library (e.g. modelscope, an optional extra) is not installed."""


class DiskTooSmall(LabError):
    """The disk cannot hold the files still to download (plus the configured reserve)."""


class ChecksumMismatch(LabError):
    """A downloaded file's SHA-256 (or git blob id) differs from the hub's."""
