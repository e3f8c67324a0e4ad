"""Name patterns in configs: shell-style globs, or ``re:`` followed by a regular expression.

Globs match the whole value (``v*`` matches ``v1.2`` but not ``xv1``); ``*``
is any run of characters, ``?`` one character, ``[abc]`` one of a set. A
``re:`` pattern is searched for anywhere in the value, as ``re.search`` does.
The regular expressions produced here mean the same to Python's ``re`` and to
the Rust engine polars uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Characters with a meaning in either regex dialect, escaped when a glob uses them literally.
_META = set(r"\.+*?()|[]{}^$#&-~")


def glob_regex(glob: str) -> str:
    """An anchored regular expression matching what ``glob`` matches."""
    out = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (end := glob.find("]", index + 2)) != -1:
            body = glob[index + 1 : end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = "".join(f"\\{c}" if c in r"\^[]&~" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            index = end
        else:
            out.append(f"\\{char}" if char in _META else char)
        index += 1
    return "^(?:" + "".join(out) + ")$"


def pattern_regex(pattern: str) -> str:
    """The regular expression for one config pattern (a glob, or ``re:...``)."""
    return pattern[3:] if pattern.startswith("re:") else glob_regex(pattern)


def patterns_regex(patterns: str | Sequence[str]) -> str:
    """One regular expression matching any of the patterns."""
    items = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    return "|".join(f"(?:{pattern_regex(pattern)})" for pattern in items)


def regex_problem(regex: str) -> str | None:
    """Why Python's ``re`` or polars' engine refuses ``regex`` (one line), or None when both take it.

    Both must: configs are checked with ``re`` and matched by polars, whose
    engine has no look-around (``(?=``, ``(?<!``) and no back-references.
    """
    try:
        re.compile(regex)
    except re.error as exc:
        return str(exc)
    import polars as pl

    try:
        pl.Series([""], dtype=pl.String).str.contains(regex)
    except pl.exceptions.PolarsError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        return next((line.removeprefix("error: ") for line in lines if line.startswith("error:")), lines[0])
    return None
