"""The one Jinja environment of the deliverables: markdown templates are not autoescaped
(untrusted text goes through |md), HTML templates are; an undefined name is an error, never
an empty cell; t(), note() and |status follow the render's language."""
import jinja2
import pytest

from lab.deliver.jinja import environment, fmt_ms, fmt_ts, status_text

HOSTILE = "<b>x</b> | *y*"


def test_one_environment_autoescapes_html_templates_only():
    env = environment()
    assert env is environment()
    assert env.autoescape("report.md.j2") is False
    assert env.autoescape("dashboard.html.j2") is True


def test_markdown_num_escapes_text_and_html_autoescapes_it():
    env = environment()
    md = env.from_string("{{ v|num }} {{ n|num }} {{ v|md }}")
    assert md.render(v=HOSTILE, n=1234.5) == (
        "&lt;b&gt;x&lt;/b&gt; \\| \\*y\\* 1,234.50 &lt;b&gt;x&lt;/b&gt; \\| \\*y\\*")
    html = jinja2.Environment(autoescape=True)
    html.filters.update(env.filters)
    html.globals.update(env.globals)
    assert html.from_string("{{ v|num }}").render(v=HOSTILE) == "&lt;b&gt;x&lt;/b&gt; | *y*"


def test_an_undefined_name_is_an_error_not_an_empty_cell():
    with pytest.raises(jinja2.UndefinedError):
        environment().from_string("{{ nothing.here }}").render(lang="en")


def test_language_helpers():
    env = environment()
    tmpl = env.from_string("{{ t('通过', 'pass') }} {{ 'fail'|status }} {{ 'odd'|status }} "
                           "{{ note('tp_cpu_profile')[:13] }}")
    assert tmpl.render(lang="en") == "pass ❌ fail odd (CPU profile:"
    assert tmpl.render(lang="zh").startswith("通过 ❌ 失败 odd （CPU 配置")
    assert status_text("skipped", "zh") == "⏭️ 跳过"
    assert fmt_ms(0.0123) == "12.3" and fmt_ms(None) == "n/a" and fmt_ts(None) == "n/a"
