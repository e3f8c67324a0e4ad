"""Which deployments were rollbacks, inferred from the commits each one deployed.

Within one entity and environment, in send order, a deployment is a rollback
when:

1. its commit was deployed successfully before, by a deployment other than
   the successful one just before it (redeploying the current commit is not a
   rollback): ``deployment_type = "rollback"`` and, if it has no description,
   "Rollback to <earlier build_id>"; or
2. its source has the git repository (``git-tags``) and its commit is an
   ancestor of the commit the previous successful deployment shipped.

A ``deployment_type`` a source already set (a CI export's column, a hotfix
pattern) is kept. ``[normalize] infer_rollbacks = false`` turns this off. The
rule sees the history read in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl

IsAncestor = Callable[[Sequence[tuple[str, str]]], list[bool]]


def infer_rollbacks(events: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> pl.DataFrame:
    """Events in send order, with rollbacks marked (see the module's rules)."""
    if events.height == 0:
        return events
    place = ["entityId", "env"]
    sha = pl.col("build_commit_sha")
    shipped = pl.col("status") == "success"

    def last_before(value: pl.Expr, over: list[str]) -> pl.Expr:
        return pl.when(shipped).then(value).shift(1).forward_fill().over(over)

    frame = events.with_row_index("_position").with_columns(
        last_before(sha, place).alias("_previous_sha"),
        last_before(pl.col("build_id"), place).alias("_previous_build"),
        last_before(pl.col("build_id"), [*place, "build_commit_sha"]).alias("_earlier_build"),
    )
    moved_back = sha.is_not_null() & (sha != pl.col("_previous_sha")).fill_null(True)
    frame = frame.with_columns(
        (moved_back & pl.col("_earlier_build").is_not_null() & sha.is_not_null()).alias("_redeployed")
    )
    ancestor_of_previous = _ask_repositories(frame, ancestry)
    rollback_to = (
        pl.when(pl.col("_redeployed"))
        .then(pl.format("Rollback to {}", pl.col("_earlier_build")))
        .when(pl.col("_position").is_in(ancestor_of_previous))
        .then(pl.format("Rollback to {} (an ancestor of {})", sha.str.slice(0, 12), pl.col("_previous_build")))
    )
    return frame.with_columns(
        pl.when(pl.col("deployment_type").is_null() & rollback_to.is_not_null())
        .then(pl.lit("rollback"))
        .otherwise(pl.col("deployment_type"))
        .alias("deployment_type"),
        pl.when(pl.col("description").is_null() & pl.col("deployment_type").is_null())
        .then(rollback_to)
        .otherwise(pl.col("description"))
        .alias("description"),
    ).select(events.columns)


def _ask_repositories(frame: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> list[int]:
    """Positions of events whose commit is an ancestor of the previous one (rule 2)."""
    found: list[int] = []
    for source, is_ancestor in ancestry.items():
        candidates = frame.filter(
            (pl.col("source") == source)
            & ~pl.col("_redeployed")
            & pl.col("build_commit_sha").is_not_null()
            & pl.col("_previous_sha").is_not_null()
            & (pl.col("build_commit_sha") != pl.col("_previous_sha"))
        ).select("_position", "build_commit_sha", "_previous_sha")
        if candidates.height == 0:
            continue
        pairs = list(candidates.select("build_commit_sha", "_previous_sha").iter_rows())
        answers = is_ancestor(pairs)
        found.extend(
            position
            for position, answer in zip(candidates.get_column("_position").to_list(), answers, strict=True)
            if answer
        )
    return found
