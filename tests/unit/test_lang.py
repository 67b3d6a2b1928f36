"""lab.core.lang: the one zh/en choice."""

from __future__ import annotations

import pytest

from lab.core import config
from lab.core.errors import ConfigError
from lab.core.lang import DEFAULT_LANG, LANGS, check_lang, pick


def test_pick_gives_the_text_of_the_language():
    assert pick("zh", "显存", "memory") == "显存"
    assert pick("en", "显存", "memory") == "memory"
    assert pick("en", ("a", 1), ("b", 2)) == ("b", 2)


@pytest.mark.parametrize("bad", ["cn", "zh-CN", "EN", "", None])
def test_an_unknown_language_is_one_clear_line_not_english(bad):
    with pytest.raises(ConfigError, match="lang must be zh or en"):
        pick(bad, "中", "en")
    with pytest.raises(ConfigError, match="lang must be zh or en"):
        check_lang(bad)


def test_chinese_is_the_default_everywhere():
    assert LANGS[0] == DEFAULT_LANG == "zh"
    assert config.DEFAULTS["lang"] == DEFAULT_LANG


def test_config_validation_uses_the_same_check():
    cfg = config.merged({"lang": "fr"})
    with pytest.raises(ConfigError, match="lang must be zh or en, got 'fr'"):
        config.validate(cfg)
    assert config.validate(config.merged({"lang": "en"}))["lang"] == "en"
