"""Escaping for untrusted text (model output, log lines) in rendered markdown.

Model output is untrusted: without escaping, a reply could inject links, images, HTML or
break out of a code fence in the execution log.
"""

from __future__ import annotations

import html
import re

# Characters that make structure anywhere inline (emphasis, code, links, tables).
_MD_INLINE = re.compile(r"([\\`*_\[\]|~])")
# ... and at the start of a line (headings, lists, quotes).
_MD_LINE_START = re.compile(r"^(\s*)([#+\-=>])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MD_ORDERED = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")


def md_inline(text: object) -> str:
    """Text safe to place inline in markdown, on one line: HTML-escaped (so no tag or
    entity survives), structural markdown punctuation backslash-escaped, and newlines
    turned into `<br>` so a table row or a quote stays one block."""
    # Control characters (random-weight models emit NULs) would corrupt the file's text.
    s = _CONTROL.sub("\ufffd", str(text))
    s = html.escape(s, quote=False)
    s = _MD_INLINE.sub(r"\\\1", s)
    s = _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s)
    s = _MD_ORDERED.sub(lambda m: m.group(1) + "\\" + m.group(2), s)
    return s.replace("\r", "").replace("\n", "<br>")


def code_block(text: object, info: str = "text") -> str:
    """A fenced block whose fence is longer than any backtick run inside, so content
    cannot close it early."""
    s = str(text).rstrip("\n")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{s}\n{fence}"
