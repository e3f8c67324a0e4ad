"""The least a dry run of the benchmark's export must do, in plain polars: a lower bound, not a dry run.

Usage: python tests/bench/least_dry_run.py EXPORT.csv OUT_DIR

Reads the export, reads its times in the five forms the generator writes (Z,
+02:00, no offset, epoch seconds and milliseconds) with polars' own parsers,
maps environments and conclusions, keeps known environments, keeps one row per key (the latest), sorts
the events by time and writes them, and writes the other rows beside them.

It leaves out what backfill promises beyond that: the field-count check of
every row, the other time forms and the checks that a time exists, trimming
every field, reasons for each row left out and the skipped file apart from the
rejects, rollback inference, formula-safe cells, the per-source counts and the
summary, the config. bench_dry_run.py times it beside the floors, to show how
much of the target the work itself already takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def main() -> None:
    export, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = pl.read_csv(export, infer_schema=False)
    text = pl.col("updated_at").str.strip_chars()
    number = text.cast(pl.Int64, strict=False)
    instant = pl.coalesce(
        text.str.to_datetime("%Y-%m-%dT%H:%M:%S%#z", strict=False, time_unit="us", time_zone="UTC"),
        text.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        pl.when(number < 10**11)
        .then(pl.from_epoch(number, time_unit="s"))
        .otherwise(pl.from_epoch(number, time_unit="ms"))
        .dt.replace_time_zone("UTC"),
    ).dt.truncate("1s")
    env = pl.col("environment").str.strip_chars().str.to_lowercase()
    conclusion = pl.col("conclusion")
    classified = rows.with_columns(
        instant.alias("_ts"),
        pl.when(env == "prod")
        .then(pl.lit("production"))
        .when(env == "stg")
        .then(pl.lit("staging"))
        .when(env == "dev")
        .then(pl.lit("development"))
        .otherwise(env)
        .alias("env"),
        pl.when(conclusion == "success")
        .then(pl.lit("success"))
        .when(conclusion == "failure")
        .then(pl.lit("failed"))
        .alias("status"),
    )
    known_env = pl.col("env").is_in(["production", "staging", "development"])
    is_event = pl.col("status").is_not_null() & pl.col("_ts").is_not_null() & known_env
    events = (
        classified.filter(is_event)
        .sort("_ts", maintain_order=True)
        .unique(subset=["id", "env"], keep="last", maintain_order=True)
    )
    events.select(
        pl.col("_ts").dt.strftime(FORMAT).alias("timestamp"),
        pl.lit("shop").alias("entityId"),
        "env",
        "status",
        pl.col("id").alias("build_id"),
        pl.col("head_sha").alias("build_commit_sha"),
        pl.col("html_url").alias("build_url"),
        pl.col("display_title").alias("description"),
        pl.col("actor_login").alias("initiator"),
        pl.col("environment").alias("original_env"),
    ).write_csv(out / "least_review.csv")
    classified.filter(~is_event).drop("_ts").write_csv(out / "least_rest.csv")


if __name__ == "__main__":
    main()
