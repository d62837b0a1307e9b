"""Raw directions from what a user types: a vector file inside the workspace, or a combination of features'
decoder directions.

    terms = parse_terms("2*topk-l6:3 - 0.5*mp-l6:7")    # [(2.0, "topk-l6", 3), (-0.5, "mp-l6", 7)]
    vector, hook = combine(terms, dictionaries)          # sum of coefficient x decoder row, at their shared hook
    vector = read_vector("directions/honesty.npy", ws.root)

A combination is a raw direction: `add` adds it as given (strength 1 = the sum of the rows, each row as the
decoder applies it), the geometric modes use its unit direction. A single DICT:ID with no coefficient is a
feature, not a direction (`is_feature`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from store.errors import InputError

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_TERM = re.compile(rf"\s*(?P<sign>[+-])?\s*(?:(?P<coef>{_NUMBER})\s*\*\s*)?"
                   r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<feature>\d+)\s*")
_SINGLE = re.compile(r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*):(?P<feature>\d+)\s*")
FORMS = "DICT:ID (a feature), a combination such as 2*DICT:3 - DICT:7 (their decoder directions), or a .npy file"


def is_feature(text: str) -> tuple[str, int] | None:
    """(dictionary, feature) when `text` is one DICT:ID and nothing else."""
    found = _SINGLE.fullmatch(text)
    return (found["name"], int(found["feature"])) if found else None


def parse_terms(text: str) -> list[tuple[float, str, int]]:
    """(coefficient, dictionary, feature) of each term of `c1*DICT:ID + c2*DICT:ID - ...`."""
    terms, at = [], 0
    while at < len(text):
        found = _TERM.match(text, at)
        if found is None or (terms and not found["sign"]) or found.end() == at:
            raise InputError(f"cannot read {text.strip()!r} as a direction: use {FORMS}")
        coefficient = float(found["coef"]) if found["coef"] else 1.0
        terms.append((-coefficient if found["sign"] == "-" else coefficient, found["name"], int(found["feature"])))
        at = found.end()
    if not terms:
        raise InputError(f"the direction is empty: use {FORMS}")
    return terms


def combine(terms: list[tuple[float, str, int]], dictionaries: Mapping) -> tuple[tuple[float, ...], str]:
    """(vector [d_in], hook): the sum of coefficient x each feature's decoder direction (SteerDictionary by
    name); every term must read the same hook."""
    vector, hooks = None, set()
    for coefficient, name, feature in terms:
        if name not in dictionaries:
            raise InputError(f"unknown dictionary {name!r} in the direction")
        dictionary = dictionaries[name]
        target = dictionary.target(feature)
        row = (target.unit * target.norm).double().cpu()
        vector = coefficient * row if vector is None else vector + coefficient * row
        hooks.add(dictionary.hook)
    if len(hooks) > 1:
        raise InputError(f"a combination must stay at one hook (got {', '.join(sorted(hooks))})")
    if not bool(vector.any()):
        raise InputError("the combination is the zero vector: it has no direction")
    return tuple(float(v) for v in vector), hooks.pop()


def read_vector(text: str, root: str | Path) -> tuple[float, ...]:
    """The numbers of a .npy file inside `root` (a path relative to it, or absolute), flattened."""
    import numpy as np

    base = Path(root).resolve()
    path = Path(text.strip()).expanduser()
    real = (path if path.is_absolute() else base / path).resolve()
    if not real.is_relative_to(base):
        raise InputError(f"the direction file {text.strip()!r} is outside the workspace {base}")
    if real.suffix != ".npy" or not real.is_file():
        raise InputError(f"no .npy direction file {text.strip()!r} in the workspace {base}")
    try:
        array = np.load(real, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read the direction file {text.strip()!r}: {exc}") from None
    if not np.issubdtype(array.dtype, np.number):
        raise InputError(f"the direction file {text.strip()!r} does not hold numbers")
    return tuple(float(v) for v in array.reshape(-1))
