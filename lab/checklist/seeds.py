"""The checklist from the seeds, as data: each day's steps in order, and the 验收
(acceptance) items with the recorded criterion that ticks each one."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from lab.record.runner import StepSpec


@dataclass(frozen=True)
class Acceptance:
    """One 验收 checkbox. Ticked only when `step`'s criterion `criterion` (or, with
    criterion None, the whole step) is recorded as pass."""
    label_zh: str
    label_en: str
    step: str
    criterion: str | None = None


DAY_MODULES = {"day3": "lab.checklist.steps.day3", "day4": "lab.checklist.steps.day4", "day5": "lab.checklist.steps.day5"}


def day_module(day: str):
    """The module that defines a day: TITLE_ZH/TITLE_EN, STEPS (StepSpecs in order),
    ACCEPTANCE, FUNCS (key -> step function) and NEEDS (key -> step that must pass first)."""
    if day not in DAY_MODULES:
        from lab.core.errors import ConfigError
        raise ConfigError(f"unknown day {day!r}; choose one of {', '.join(DAY_MODULES)}")
    return importlib.import_module(DAY_MODULES[day])


class _Days(dict):
    """DAYS[day] -> {"title_zh", "title_en", "steps", "acceptance"}, loaded on first use."""
    def __missing__(self, day: str) -> dict:
        mod = day_module(day)
        self[day] = {"title_zh": mod.TITLE_ZH, "title_en": mod.TITLE_EN,
                     "steps": mod.STEPS, "acceptance": mod.ACCEPTANCE}
        return self[day]

    def __contains__(self, day: object) -> bool:
        return day in DAY_MODULES

    def __iter__(self):
        return iter(DAY_MODULES)


DAYS = _Days()


def spec(day: str, key: str) -> StepSpec:
    for s in DAYS[day]["steps"]:
        if s.key == key:
            return s
    raise KeyError(f"{day} has no step {key}")


def specs(day: str) -> dict[str, StepSpec]:
    return {s.key: s for s in DAYS[day]["steps"]}
