"""Small pieces the pages share: query parameters, feature links, token highlighting (always escaped)."""
from __future__ import annotations

import html
import re
from typing import Sequence

import streamlit as st

from analysis.display import num as num
from analysis.display import pct as pct
from analysis.display import visible as visible
from app.ui.main import HERE, page
from store.errors import InputError

HIGHLIGHT = "255, 140, 0"
"""RGB of token highlighting; the alpha channel carries the activation."""


def int_param(name: str, value: str | None) -> int | None:
    """A query parameter that must be a non-negative integer (None when absent)."""
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if number < 0:
        raise InputError(f"{name} must not be negative, got {number}")
    return number


def float_param(name: str, value: str | None) -> float | None:
    """A query parameter that must be a finite number (None when absent)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return number


def show_error(exc: Exception) -> None:
    """Bad input stops the page with one line (escaped: messages quote what the user typed)."""
    st.error(md_escape(str(exc)))
    st.stop()


def analysed_names(analysed: dict) -> list[str]:
    """The analysed dictionaries' names, sorted; with none, says which command makes one and stops the page."""
    if not analysed:
        st.info("No analysed dictionary yet: analyse one with `sparsescope analyze` (or run `sparsescope demo`).")
        st.stop()
    return sorted(analysed)


def asked_dictionary(names: list[str], known_as: str = "analysed") -> str | None:
    """The `dict` query parameter, which must be one of `names` (None when absent); st.error and stop if not."""
    asked = st.query_params.get("dict")
    if asked is not None and asked not in names:
        show_error(InputError(f"unknown dictionary {asked!r} ({known_as}: {', '.join(names)})"))
    return asked


def asked_feature_of(names: list[str], known_as: str = "analysed") -> tuple[str | None, int | None]:
    """The `dict` and `feature` query parameters, checked (st.error and stop on a bad one)."""
    try:
        feature = int_param("feature", st.query_params.get("feature"))
    except InputError as exc:
        show_error(exc)
    return asked_dictionary(names, known_as), feature


def page_link(url_path: str, label: str, icon: str | None = None, **params) -> bool:
    """Link to a registered page with query parameters; draws nothing (False) if no such page is registered."""
    spec = page(url_path)
    if spec is None:
        return False
    st.page_link(HERE / spec.path, label=label, icon=icon,
                 query_params={k: str(v) for k, v in params.items()})
    return True


def feature_link(dictionary: str, feature: int, label: str | None = None) -> None:
    page_link("feature", label or f"#{feature}", dict=dictionary, feature=feature)


def feature_url(dictionary: str, feature: int) -> str:
    """Relative URL of a feature page (for link columns of tables)."""
    from urllib.parse import urlencode

    return "feature?" + urlencode({"dict": dictionary, "feature": int(feature)})


def token_text(token: str) -> str:
    """A token for HTML: visible(token), escaped."""
    return html.escape(visible(token))


def tokens_html(tokens: Sequence[str], acts: Sequence[float], scale: float, titles: Sequence[str] | None = None,
                mark: int | None = None) -> str:
    """Tokens as spans whose background opacity is act / scale; hovering shows titles[i] (default: the act).

    Every token and title is HTML-escaped. `mark` outlines one token (the example's firing position).
    """
    scale = scale if scale and scale > 0 else 1.0
    spans = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        alpha = min(max(float(act) / scale, 0.0), 1.0)
        title = titles[i] if titles is not None else f"{float(act):.4g}"
        outline = "outline:2px solid #c2410c;" if i == mark else ""
        spans.append(f'<span class="tok" title="{html.escape(title, quote=True)}" '
                     f'style="background:rgba({HIGHLIGHT},{alpha:.3f});{outline}">{token_text(token)}</span>')
    return ('<div style="font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.9;'
            'font-size:0.9rem">' + "".join(spans) + "</div>")


_MD_ANYWHERE = re.compile(r"([\\`*_{}\[\]<>|~$&])")
"""Characters that start Markdown anywhere in a line: emphasis, code, links and images ([...](...)), autolinks and
HTML (<...>), tables, LaTeX ($), entities (&), Streamlit's :color[...] directives."""
_MD_LINE_START = re.compile(r"^([ \t]*)([#+\-=:])", re.MULTILINE)
"""Headings, list items, setext underlines and block directives (::name) start a line."""
_MD_ORDERED = re.compile(r"^([ \t]*\d+)([.)])", re.MULTILINE)
_MD_DIRECTIVE = re.compile(r"(?<![\\:]):(?=[A-Za-z])")
"""A colon before a letter starts a text directive: Streamlit draws :red as an empty red span and drops the word."""
_MD_BARE = re.compile(r"(?<=:)(?=//)|(?i:(?<=\bwww))(?=\.)|(?<=@)(?=[\w-])|(?<=:)(?=[\w+\-/]+:)")
"""Where bare URLs (http://, www.), e-mail addresses and :shortcodes: (emoji, :material/icon:) would turn into
links or icons. Streamlit's renderer finds these in the text after parsing, where backslash escapes are gone, so
an invisible WORD JOINER (U+2060) goes there instead."""


def md_escape(text: str) -> str:
    """User- or model-derived text for anything Streamlit renders as Markdown (st.markdown, st.caption, st.error,
    st.info, titles, labels of metrics, links, buttons and pills): shown as literal text, never as a link, an image,
    HTML, formatting or an icon. Characters that cannot start Markdown where they stand are left alone, so messages
    stay readable ("unknown dictionary 'x' (known: a-b, c)" is unchanged). Checked in a browser against
    Streamlit's renderer (tests/browser/test_ui_browser.py)."""
    text = _MD_ANYWHERE.sub(r"\\\1", str(text))
    text = _MD_LINE_START.sub(r"\1\\\2", text)
    text = _MD_ORDERED.sub(r"\1\\\2", text)
    text = _MD_DIRECTIVE.sub(r"\\:", text)
    return _MD_BARE.sub("\u2060", text)


def text_html(text: str, tag: str = "span", style: str = "") -> str:
    """User text (labels, notes) as escaped HTML."""
    return f'<{tag} style="{html.escape(style, quote=True)}">{html.escape(text)}</{tag}>'


def example_html(example, scale: float) -> str:
    """One stored example: its window of tokens highlighted by the feature's activation on each."""
    if not example.tokens:  # the context or the vocabulary is not in the store
        return text_html(f"context {example.context_id}, position {example.position}: "
                         f"{example.activation:.4g} (token text not stored)", "div")
    titles = [f"{a:.4g}" for a in example.token_acts]
    return tokens_html(example.tokens, example.token_acts, scale, titles, mark=example.position - example.window_start)


def ranked_links(dictionary: str, entries, what: str) -> None:
    """Other features (neighbours, parents) as links with their score."""
    if not entries:
        st.caption(f"no {what}")
    for entry in entries:
        feature_link(dictionary, entry.id, f"#{entry.id} \u00b7 {what} {entry.value:.3g}")
