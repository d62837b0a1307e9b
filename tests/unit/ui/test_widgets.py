"""Widget helpers: escaping of token and user text, query parameters, feature URLs."""
import pytest

from app.ui.widgets.common import feature_url, int_param, md_escape, text_html, tokens_html, visible
from store.errors import InputError
from tests.helpers import HOSTILE, assert_literal, rendered_markdown


def test_tokens_are_escaped_and_shaded_by_activation():
    html = tokens_html(["<b>", " &", "\n", "\x1c"], [2.0, 1.0, 0.0, 4.0], scale=2.0,
                       titles=['a"b', "x", "y", "z"], mark=0)
    assert "&lt;b&gt;" in html and "<b>" not in html and "&amp;" in html
    assert 'title="a&quot;b"' in html and "outline" in html
    assert "rgba(255, 140, 0,1.000)" in html and "rgba(255, 140, 0,0.500)" in html
    assert "\u21b5" in html and "\\x1c" in html  # line break and control character made visible


def test_user_text_is_escaped_for_html_and_markdown():
    assert text_html("<script>alert(1)</script>") == "<span style=\"\">&lt;script&gt;alert(1)&lt;/script&gt;</span>"
    assert md_escape("[x](javascript:alert(1))") == "\\[x\\](javascript\\:alert(1))"
    for text in HOSTILE:  # rendered, each is plain text again, with no element of any kind
        assert_literal(md_escape(text), text)
        assert rendered_markdown(text)[1]  # (the check sees what each one would make unescaped)
    # what cannot start Markdown where it stands is left alone: messages stay readable
    assert md_escape("unknown dictionary 'a-b' (known: c.d, e-f; 10:30)") == \
        "unknown dictionary 'a-b' (known: c.d, e-f; 10:30)"
    assert visible("") == "\u2205" and visible("a b") == "a b"


@pytest.mark.parametrize("raw, expected", [(None, None), ("", None), ("7", 7), ("0", 0)])
def test_int_param_accepts_whole_numbers(raw, expected):
    assert int_param("feature", raw) == expected


@pytest.mark.parametrize("raw, message", [("x", "whole number"), ("1.5", "whole number"), ("-2", "negative")])
def test_int_param_refuses_the_rest(raw, message):
    with pytest.raises(InputError, match=message):
        int_param("feature", raw)


def test_feature_url_is_relative_and_encoded():
    assert feature_url("a b&c", 3) == "feature?dict=a+b%26c&feature=3"
