"""Escaping for untrusted text (model output, log lines) in rendered markdown.

Model output is untrusted: without escaping, a reply could inject links, images, HTML or
break out of a code fence in the execution log.
"""
from __future__ import annotations

import html
import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_inline(text: object) -> str:
    """Text safe to place inline in markdown: HTML-escaped, markdown punctuation
    backslash-escaped, newlines turned into `<br>` so a table row stays one row."""
    s = html.escape(str(text), quote=True)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("\r", "").replace("\n", "<br>")


def code_block(text: object, info: str = "text") -> str:
    """A fenced block whose fence is longer than any backtick run inside, so content
    cannot close it early."""
    s = str(text).rstrip("\n")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{s}\n{fence}"
