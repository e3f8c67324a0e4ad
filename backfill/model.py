"""The vocabulary every step of the data path shares: column names, the event key, the outcomes.

An extractor returns :data:`RAW_COLUMNS` (all text, as read); normalization
turns them into :data:`EVENT_COLUMNS` (what DevGrid receives) plus
:data:`REVIEW_EXTRA_COLUMNS` (what a reviewer needs to judge them). This module
imports nothing of backfill's own, so any step may use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import polars as pl
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

# How a run ended: a dry run is "reviewed"; a sending run is "done" when every planned event was
# delivered, "refused-events" when DevGrid refused or held some, "incomplete" when some were left
# unsent, "auth-refused" when DevGrid refused the key, "interrupted" by Ctrl-C or SIGTERM.
RunOutcome = Literal["reviewed", "done", "refused-events", "incomplete", "auth-refused", "interrupted"]

# A batch in the state file: written ahead and not yet answered, then settled one way for good.
BatchState = Literal["pending", "answered", "split", "released"]
# An event in a destination's ledger (see backfill.plan.ledger for what each means to a plan).
LedgerState = Literal["pending", "sent", "refused", "held"]

# What a status means once read: a deployment that succeeded or failed, or not a deployment.
Outcome = Literal["success", "failed", "skip"]


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def relative_to_config(value: str, info: ValidationInfo) -> str:
    """A path in a config file is relative to the file's folder (given as ``base_dir`` when it is read)."""
    base = (info.context or {}).get("base_dir")
    return str(Path(base, value) if base else Path(value))


# A config key naming a local file.
ConfigPath = Annotated[str, AfterValidator(relative_to_config)]


def known_time_zone(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"'{value}' is not a time zone name such as UTC or Europe/Berlin") from exc
    return value


# A config key naming a time zone of the IANA database.
TimeZoneName = Annotated[str, AfterValidator(known_time_zone)]


# The attributes an event may carry besides env and status, in review CSV order.
ATTRIBUTE_COLUMNS: Final = (
    "build_id",
    "build_commit_sha",
    "change_id",
    "build_url",
    "description",
    "initiator",
    "deployment_type",
)

# The review CSV's event fields, in this order (the public contract).
EVENT_COLUMNS: Final = ("timestamp", "entityId", "env", "status", *ATTRIBUTE_COLUMNS)

# Columns the review CSV carries after the event fields.
REVIEW_EXTRA_COLUMNS: Final = ("source", "original_env")

# Columns the review CSV carries after those when the config enriches events ([[enrich]]).
ENRICHED_COLUMNS: Final = ("change_id_rule",)

# What an extractor hands to normalization: the event fields as raw text, plus
#  - duration_ms: added to timestamp when a system records start time and duration (Jenkins);
#  - skip_reason: set when the extractor already knows a row is not a deployment;
#  - reject_reason: set when the extractor already knows a row is unusable (a ragged CSV row);
#  - row: the 1-based record number within the source, for the rejects file.
RAW_COLUMNS: Final = (*EVENT_COLUMNS, "duration_ms", "skip_reason", "reject_reason")
ROW = "row"
# A file's columns an extractor passes through normalization untouched, under this prefix, to read
# once the rows are classified (backfill.extract.mapping.raw_frame); then they are dropped.
PASSED_THROUGH: Final = "__backfill_passed:"
PASSED_THROUGH_COLUMNS: Final = f"^{re.escape(PASSED_THROUGH)}.*$"  # as polars selects columns by pattern


def passed_through(column: str) -> str:
    """The name a file's column passed through normalization goes by."""
    return PASSED_THROUGH + column


# The key that identifies one deployment: the same run exported twice is one event.
EVENT_KEY: Final = ("entityId", "env", "build_id")

# The event's time as an instant, Datetime(us, UTC), beside the text DevGrid receives;
# null where the timestamp is unusable.
TS: Final = "_ts"


@dataclass(frozen=True)
class EventKey:
    """One deployment's identity, the same in the plan, the ledger and DevGrid's answer."""

    entity_id: str
    env: str
    build_id: str


def instant(value: str | datetime) -> datetime:
    """An ISO 8601 time as an aware datetime; one without an offset is UTC. Raises ValueError.

    For the times backfill itself writes or is given on the command line; the
    many forms exports use are the normalizer's (backfill.normalize.timestamps).
    """
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# A text cell a spreadsheet would run as a formula is written with a leading quote, and read
# back without it, so that the review CSV is safe to open and still round-trips.
FORMULA_START = r"^([=+\-@\t\r'])"


def escape_formula(column: pl.Expr) -> pl.Expr:
    return column.str.replace(FORMULA_START, "'${1}")


def starting_like_a_formula(frame: pl.DataFrame, columns: Sequence[str]) -> frozenset[str]:
    """Those of the text ``columns`` in which some cell starts like a formula (the first character is cheap)."""
    if not columns:
        return frozenset()
    found = frame.select(pl.col(columns).str.contains(FORMULA_START).any())
    return frozenset(name for name in columns if found.get_column(name).item())


def unescape_formula(column: pl.Expr) -> pl.Expr:
    return column.str.replace(r"^'", "")


def empty_raw_frame() -> pl.LazyFrame:
    """A raw frame with no rows, for sources that found nothing."""
    schema: dict[str, pl.DataType] = {name: pl.String() for name in RAW_COLUMNS}
    schema[ROW] = pl.UInt32()
    return pl.LazyFrame(schema=schema)
