"""The download step's values (`invoke download`, Day 3 step 4 and Day 4 step 2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lab.record.values.common import StepValues


@dataclass
class DownloadValues(StepValues):
    """What the download step recorded. Bytes are bytes; MB in `mb_per_s` is 10^6 bytes.
    `skipped_reason` is set when nothing was (or needed to be) fetched from a hub: the cpu and
    rehearsal profiles build their models offline, and a local path needs no download."""

    KEY: ClassVar[str] = "download"

    model: str | None = None  # what was asked for (a repo id or a local path)
    profile: str | None = None
    skipped_reason: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None  # the commit the revision resolved to
    source: str | None = None  # hf | modelscope
    endpoint: str | None = None  # the hub or mirror
    local_dir: str | None = None
    files: int | None = None  # in the repository
    files_fetched: int | None = None  # fetched (or continued) by this run
    bytes_total: int | None = None
    bytes_fetched: int | None = None  # received by this run
    bytes_resumed: int | None = None  # kept from an earlier run's partial files
    seconds: float | None = None  # wall time of the transfer
    mb_per_s: float | None = None  # bytes_fetched / seconds
    verify_s: float | None = None  # SHA-256 / blob-id check of every file
    already_present: bool = False  # a verified copy was there: nothing downloaded
    manual_command: str | None = None  # what a learner would type by hand
    served_model_name: str | None = None  # serve: --model local_dir --served-model-name repo_id
