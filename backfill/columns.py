"""Column names shared by every stage of the data path.

An extractor returns :data:`RAW_COLUMNS` (all text, as read); normalization
turns them into :data:`EVENT_COLUMNS` (what DevGrid receives) plus
:data:`REVIEW_EXTRA_COLUMNS` (what a reviewer needs to judge them).
"""

from __future__ import annotations

from typing import Final

import polars as pl

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

# The key that identifies one deployment: the same run exported twice is one event.
EVENT_KEY: Final = ("entityId", "env", "build_id")

STATUSES: Final = ("success", "failed")


def empty_raw_frame() -> pl.LazyFrame:
    """A raw frame with no rows, for sources that found nothing."""
    schema: dict[str, pl.DataType] = {name: pl.String() for name in RAW_COLUMNS}
    schema[ROW] = pl.UInt32()
    return pl.LazyFrame(schema=schema)
