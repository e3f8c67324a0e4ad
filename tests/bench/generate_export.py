"""Write a large, messy GitHub Actions runs export for the dry-run benchmark.

Usage: python tests/bench/generate_export.py ROWS OUT.csv

About 190 bytes a row (1,000,000 rows is about 190 MB), deterministic. The mess
is the kind real exports have: times with Z, with offsets, without an offset
and as epoch seconds or milliseconds; environment aliases and capitals; about
2% of runs exported twice and 1% re-run with a later outcome; cancelled,
skipped and unfinished runs; a few impossible times and unknown environments;
titles with commas and quotes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

START = 1_672_531_200  # 2023-01-01T00:00:00Z


def generate(rows: int) -> pl.DataFrame:
    # A deterministic pseudo-random number per row and purpose, from polars' hash.
    def rand(seed: int, modulo: int) -> pl.Expr:
        return (pl.col("i").hash(seed) % modulo).cast(pl.Int64)

    base = pl.DataFrame({"i": pl.int_range(0, rows, eager=True)}).lazy()
    epoch = pl.lit(START) + pl.col("i") * 30 + rand(1, 20)
    instant = pl.from_epoch(epoch, time_unit="s")
    time_form = rand(2, 100)
    updated = (
        pl.when(time_form < 55)
        .then(instant.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .when(time_form < 75)
        .then((instant + pl.duration(hours=2)).dt.strftime("%Y-%m-%dT%H:%M:%S+02:00"))
        .when(time_form < 85)
        .then(instant.dt.strftime("%Y-%m-%d %H:%M:%S"))
        .when(time_form < 92)
        .then(epoch.cast(pl.String))
        .when(time_form < 99)
        .then((epoch * 1000 + rand(3, 1000)).cast(pl.String))
        .otherwise(pl.lit("2023-13-45T99:00:00Z"))
    )
    # Environment spellings, by share in percent.
    envs = {"production": 30, "Production": 5, "prod": 10, " production ": 2, "staging": 20, "stg": 8, "dev": 10}
    envs.update({"development": 10, "qa": 5})
    by_percent = [name for name, share in envs.items() for _ in range(share)]
    env = rand(4, 100).replace_strict(dict(enumerate(by_percent)), return_dtype=pl.String)
    conclusion_pick = rand(5, 100)
    conclusion = (
        pl.when(conclusion_pick < 80)
        .then(pl.lit("success"))
        .when(conclusion_pick < 90)
        .then(pl.lit("failure"))
        .when(conclusion_pick < 95)
        .then(pl.lit("cancelled"))
        .when(conclusion_pick < 98)
        .then(pl.lit("skipped"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    run_id = (pl.lit(9_000_000) + pl.col("i")).cast(pl.String)
    sha = pl.col("i").hash(6).cast(pl.String).str.pad_start(20, "0") + pl.col("i").hash(7).cast(
        pl.String
    ).str.pad_start(20, "0")
    frame = base.select(
        run_id.alias("id"),
        pl.lit("Deploy").alias("name"),
        pl.lit("main").alias("head_branch"),
        sha.str.slice(0, 40).alias("head_sha"),
        pl.lit("completed").alias("status"),
        conclusion.alias("conclusion"),
        updated.alias("updated_at"),
        pl.format("https://github.com/acme/shop/actions/runs/{}", run_id).alias("html_url"),
        pl.format("user{}", rand(8, 50)).alias("actor_login"),
        pl.format('Deploy, "release" {}', pl.col("i")).alias("display_title"),
        env.alias("environment"),
        pl.lit("1").alias("run_attempt"),
        rand(9, 100).alias("_copy"),
    ).collect()
    exported_twice = frame.filter(pl.col("_copy") < 2)
    rerun = frame.filter(pl.col("_copy") == 2).with_columns(
        pl.lit("success").alias("conclusion"), pl.lit("2").alias("run_attempt")
    )
    return pl.concat([frame, exported_twice, rerun]).sort("id", "run_attempt").drop("_copy")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows, out = int(sys.argv[1]), Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = generate(rows)
    frame.write_csv(out)
    print(f"wrote {frame.height:,} rows, {out.stat().st_size / 1e6:.0f} MB to {out}")


if __name__ == "__main__":
    main()
