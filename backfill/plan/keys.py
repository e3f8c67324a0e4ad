"""Which rows' keys may occur more than once, cheaply: most keys in a history occur once."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

import polars as pl


def may_repeat(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """True for every row whose key (the columns) occurs more than once, and for a few more.

    Equal keys hash alike, so a key whose hash occurs once occurs once; a hash
    collision only marks a few more rows, which exact steps after this then tell
    apart. Sorting the hashes finds the repeated ones faster than a hash table of
    the keys does.
    """
    hashes = frame.select(
        reduce(lambda one, other: one ^ other, [pl.col(name).hash(seed) for seed, name in enumerate(columns)])
    ).to_series()
    ordered = hashes.sort()
    return hashes.is_in(ordered.filter(ordered == ordered.shift(1)).implode())
