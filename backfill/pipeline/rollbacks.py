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
PLACE = ["entityId", "env"]


def infer_rollbacks(events: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> pl.DataFrame:
    """Events in send order, with rollbacks marked (see the module's rules)."""
    if events.height == 0:
        return events
    # Where each row's previous successful deployment is, as a position: cheap to carry.
    frame = events.with_row_index("_position").with_columns(
        _last_shipped(pl.col("_position"), PLACE).alias("_previous")
    )
    rollback_to = pl.concat(
        [_redeployed_commits(frame), _ancestors_of_previous(frame, ancestry)], how="vertical"
    ).unique("_position", keep="first", maintain_order=True)
    # A type a source already set is kept; only the rows marked here change.
    marked = rollback_to.join(
        frame.select("_position", "deployment_type", "description"), on="_position", how="inner"
    ).filter(pl.col("deployment_type").is_null())
    if marked.height == 0:
        return events
    described = marked.filter(pl.col("description").is_null())
    return events.with_columns(
        events.get_column("deployment_type").clone().scatter(marked.get_column("_position"), "rollback"),
        events.get_column("description")
        .clone()
        .scatter(described.get_column("_position"), described.get_column("_rollback_to")),
    )


def _last_shipped(value: pl.Expr, over: list[str]) -> pl.Expr:
    """The value of the last successful deployment before each row, within ``over``."""
    return pl.when(pl.col("status") == "success").then(value).shift(1).forward_fill().over(over)


def _redeployed_commits(frame: pl.DataFrame) -> pl.DataFrame:
    """Rule 1, looked at only where a commit appears more than once in a place (few rows)."""
    sha = pl.col("build_commit_sha")
    repeated = frame.filter(sha.is_not_null() & pl.struct(*PLACE, "build_commit_sha").is_duplicated())
    previous_sha = frame.get_column("build_commit_sha").gather(repeated.get_column("_previous"))
    return (
        repeated.with_columns(
            _last_shipped(pl.col("build_id"), [*PLACE, "build_commit_sha"]).alias("_earlier"),
            previous_sha.alias("_previous_sha"),
        )
        .filter(pl.col("_earlier").is_not_null() & (sha != pl.col("_previous_sha")).fill_null(True))
        .select("_position", pl.format("Rollback to {}", pl.col("_earlier")).alias("_rollback_to"))
    )


def _ancestors_of_previous(frame: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> pl.DataFrame:
    """Rule 2: for sources with a repository, a commit that is an ancestor of the previous one."""
    found: list[pl.DataFrame] = [pl.DataFrame(schema={"_position": pl.UInt32, "_rollback_to": pl.String})]
    sha, previous = pl.col("build_commit_sha"), pl.col("_previous_sha")
    for source, is_ancestor in ancestry.items():
        mine = frame.filter((pl.col("source") == source) & sha.is_not_null() & pl.col("_previous").is_not_null())
        earlier = frame.select("build_commit_sha", "build_id")[mine.get_column("_previous")]
        candidates = mine.with_columns(
            earlier.get_column("build_commit_sha").alias("_previous_sha"),
            earlier.get_column("build_id").alias("_previous_build"),
        ).filter(previous.is_not_null() & (sha != previous))
        if candidates.height == 0:
            continue
        answers = is_ancestor(list(candidates.select("build_commit_sha", "_previous_sha").iter_rows()))
        found.append(
            candidates.filter(pl.Series(answers, dtype=pl.Boolean)).select(
                "_position",
                pl.format("Rollback to {} (an ancestor of {})", sha.str.slice(0, 12), pl.col("_previous_build")).alias(
                    "_rollback_to"
                ),
            )
        )
    return pl.concat(found, how="vertical")
