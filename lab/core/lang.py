"""The zh/en choice: one place that knows the languages and picks a text by language.

Chinese is the default (the seeds are Chinese); English is the other choice. A language
from the user (a flag, invoke.yaml, INVOKE_LAB_LANG) is checked once with `check_lang`;
code that then holds a checked language picks its text with `pick`.

    >>> pick("en", "显存", "memory")
    'memory'
"""

from __future__ import annotations

from typing import Literal, TypeVar, cast

from lab.core.errors import ConfigError

Lang = Literal["zh", "en"]
#: Every language, the default first.
LANGS: tuple[Lang, ...] = ("zh", "en")
DEFAULT_LANG: Lang = "zh"

T = TypeVar("T")


def check_lang(lang: object) -> Lang:
    """`lang` as a Lang, or ConfigError (one line) when it is not zh or en."""
    if lang not in LANGS:
        raise ConfigError(f"lang must be zh or en, got {lang!r}")
    return cast(Lang, lang)


def pick(lang: str, zh: T, en: T) -> T:
    """`zh` for Chinese, `en` for English; ConfigError for any other language, so a typo
    ("cn", "zh-CN") fails loudly instead of quietly rendering English."""
    return zh if check_lang(lang) == "zh" else en
