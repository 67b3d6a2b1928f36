from lab.core.escape import code_block, md_inline


def test_model_output_cannot_inject_html_links_or_structure():
    out = md_inline('# Title\n<script>alert(1)</script> ![x](http://e/i.png) [a](b) *b* `c` | d')
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "\\[a\\]" in out and "!\\[x\\]" in out
    assert out.startswith("\\#") and "\\*b\\*" in out and "\\`c\\`" in out and "\\|" in out
    assert "\n" not in out and "<br>" in out


def test_plain_numbers_are_left_readable():
    assert md_inline("58.11 s") == "58.11 s"
    assert md_inline("1. first") == "1\\. first"


def test_code_block_fence_outgrows_backticks_inside():
    block = code_block("a ``` b ```` c")
    assert block.startswith("`````text\n") and block.endswith("\n`````")


def test_control_characters_are_replaced():
    assert md_inline("a\x00b\x1bc") == "a\ufffdb\ufffdc"
