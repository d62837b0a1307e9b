"""How tokens and numbers are shown to people, the same in the UI and in the reports."""
from __future__ import annotations

_VISIBLE = {"\n": "\u21b5", "\r": "\u240d", "\t": "\u21e5"}


def visible(token: str) -> str:
    """A token as shown: line breaks and tabs as symbols, other control characters as escapes."""
    shown = "".join(_VISIBLE.get(ch, ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode())
                    for ch in token)
    return shown or "\u2205"


def num(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.4g}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g}%"
