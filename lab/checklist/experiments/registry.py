"""Every experiment by name. Each family module defines `EXPERIMENTS` (a tuple); add a new
module's name to MODULES (one line) and its experiments are listed and runnable."""

from __future__ import annotations

import importlib

from lab.checklist.experiments.model import Experiment
from lab.core.errors import ConfigError

#: The modules defining experiments, in the order `invoke experiment --list` shows them.
MODULES = (
    "lab.checklist.experiments.serving",
    "lab.checklist.experiments.engine",
    "lab.checklist.experiments.advanced",
)


def all_experiments() -> list[Experiment]:
    """Every registered experiment, in order."""
    out: list[Experiment] = []
    for name in MODULES:
        out.extend(importlib.import_module(name).EXPERIMENTS)
    return out


def get(name: str) -> Experiment:
    """The experiment called `name`; ConfigError listing the names when there is none."""
    found = {e.name: e for e in all_experiments()}
    if name not in found:
        raise ConfigError(
            f"unknown experiment {name!r}; choose one of {', '.join(found)} "
            "(`invoke experiment --list`)"
        )
    return found[name]


def only_arms(exp: Experiment, names: list[str], profile: str) -> Experiment:
    """`exp` with only the arms named (`--arms a,b`), for a quicker run; the expectations
    about arms left out are dropped. ConfigError for a name the experiment does not have."""
    import dataclasses

    from lab.checklist.experiments.model import Change, Equals, kind_of

    arms = exp.arms_for(profile)
    known = [a.name for a in arms]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"--arms: {exp.name} has the arms {', '.join(known)}; "
            f"got {', '.join(unknown) or 'none'}"
        )
    kept = tuple(a for a in arms if a.name in names)

    def keeps(e: Change | Equals) -> bool:
        if isinstance(e, Equals):
            return e.arm in names
        return e.baseline in names and e.treatment in names

    expect = tuple(e for e in exp.expect_for(profile) if keeps(e))
    return dataclasses.replace(
        exp,
        arms={
            kind_of(profile): kept,
            **{k: v for k, v in ({"cpu": (), "gpu": ()}).items() if k != kind_of(profile)},
        },
        expect=expect,
    )


def with_requests(exp: Experiment, num_requests: int, profile: str) -> Experiment:
    """`exp` with `num_requests` measured requests per arm (`--num-requests`, a quicker run)."""
    import dataclasses

    from lab.checklist.experiments.model import kind_of

    load = exp.load_for(profile)
    if load.kind == "mixed" and load.long_count >= num_requests:
        raise ConfigError(f"--num-requests must be more than the {load.long_count} long prompts")
    return dataclasses.replace(
        exp,
        load={
            kind_of(profile): dataclasses.replace(load, num_requests=num_requests),
            **{
                k: exp.load_for("cpu" if k == "cpu" else "gpu")
                for k in ("cpu", "gpu")
                if k != kind_of(profile)
            },
        },
    )
