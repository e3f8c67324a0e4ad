"""How the report writes numbers: shares as percentages, hours as minutes, hours or days."""

from __future__ import annotations


def number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def duration(hours: float | None) -> str:
    if hours is None:
        return "-"
    if abs(hours) < 1:
        return f"{hours * 60:.0f} min"
    if abs(hours) < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"
