"""Which deployments were rollbacks, inferred from what each one deployed.

Within one entity and environment, in send order, a deployment is a rollback
when it deploys again what was deployed before:

1. its commit was deployed successfully before, by a deployment other than
   the successful one just before it (redeploying the current commit is not a
   rollback): ``deployment_type = "rollback"`` and, if it has no description,
   "Rollback to <earlier build_id>";
2. for sources whose build ids are tag names and that have the repository
   (``git-tags``): the version its tag names (see :mod:`backfill.versions`)
   was deployed successfully before by another tag, other than the successful
   one just before it (``v1.4.0``, then ``v1.5.0``, then ``deploy-1.4.0``);
3. for those sources: its commit is an ancestor of the commit the previous
   successful deployment shipped (it deploys older code), unless its tag
   names a new version of an older release line.

A new version of an older line is a deployment of that line, not a rollback:
``v2.30.3`` released after ``v2.35.2`` deploys the 2.30 line, whose newest
deployment was ``v2.30.2``, even though maintenance lines merged upward make
its commit an ancestor of ``v2.35.2``'s. A new version of an older line is
newer than every version of its line deployed before, and older than the
newest version deployed. A line is a version's numbers but the last, once
trailing zeros are dropped: ``2.30.3`` is on 2.30, ``1.4.0`` on 1, a build
number on the one line of all build numbers. So on an ancestor commit,
``v1.4.0`` after ``v1.5.0``, ``v1.4.2`` after ``v1.4.3``, build ``40`` after
``43``, ``v1.3.1`` after ``v1.3.0``, and a tag that names no version, are
rollbacks; ``v1.4.1`` after ``v1.5.0`` is not.

A ``deployment_type`` a source already set (a CI export's column, a hotfix
pattern) is kept. ``[normalize] infer_rollbacks = false`` turns this off. The
rules see the history read in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from backfill.plan.keys import may_repeat
from backfill.versions import FINAL, TagVersion, tag_version

IsAncestor = Callable[[Sequence[tuple[str, str]]], list[bool]]
PLACE = ["entityId", "env"]
_FOUND_SCHEMA = {"_position": pl.UInt32, "_rollback_to": pl.String}


def infer_rollbacks(events: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> pl.DataFrame:
    """Events in send order, with rollbacks marked (see the module's rules).

    ``ancestry`` names the sources with a repository (their build ids are tag
    names) and answers, for (commit, later commit) pairs, whether the first is
    an ancestor of the second.
    """
    return apply_rollbacks(events, rollback_marks(events, ancestry))


def rollback_marks(events: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> pl.DataFrame:
    """The rollbacks among events in send order: ``_position`` and the description to give (null: keep its own).

    Of ``deployment_type`` and ``description`` only whether they are set is read,
    so a caller may pass any column that is null exactly where they are.
    """
    if events.height == 0:
        return pl.DataFrame(schema=_FOUND_SCHEMA)
    # Where each row's previous successful deployment is, as a position: cheap to carry.
    frame = events.with_row_index("_position").with_columns(
        _last_shipped(pl.col("_position"), PLACE).alias("_previous")
    )
    rollback_to = pl.concat([_redeployed_commits(frame), *_release_rules(frame, ancestry)], how="vertical").unique(
        "_position", keep="first", maintain_order=True
    )
    # A type a source already set is kept; only the rows marked here change.
    return (
        rollback_to.join(frame.select("_position", "deployment_type", "description"), on="_position", how="inner")
        .filter(pl.col("deployment_type").is_null())
        .select(
            "_position", pl.when(pl.col("description").is_null()).then(pl.col("_rollback_to")).alias("_rollback_to")
        )
    )


def apply_rollbacks(events: pl.DataFrame, marks: pl.DataFrame) -> pl.DataFrame:
    """``deployment_type = "rollback"`` at the marked positions, and their description where one is given."""
    if marks.height == 0:
        return events
    described = marks.filter(pl.col("_rollback_to").is_not_null())
    return events.with_columns(
        events.get_column("deployment_type").clone().scatter(marks.get_column("_position"), "rollback"),
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
    repeated = frame.filter(sha.is_not_null() & pl.lit(may_repeat(frame, [*PLACE, "build_commit_sha"])))
    previous_sha = frame.get_column("build_commit_sha").gather(repeated.get_column("_previous"))
    return (
        repeated.with_columns(
            _last_shipped(pl.col("build_id"), [*PLACE, "build_commit_sha"]).alias("_earlier"),
            previous_sha.alias("_previous_sha"),
        )
        .filter(pl.col("_earlier").is_not_null() & (sha != pl.col("_previous_sha")).fill_null(True))
        .select("_position", pl.format("Rollback to {}", pl.col("_earlier")).alias("_rollback_to"))
    )


@dataclass
class _Deployed:
    """What one place has deployed so far: the newest version of each release line."""

    newest: dict[tuple[int, ...], tuple[tuple[int, ...], int, tuple[int, ...]]] = field(default_factory=dict)

    def is_maintenance(self, version: TagVersion) -> bool:
        """A new version of an older line: newer than its line's deployments, older than the newest one."""
        in_line, overall = self.newest.get(version.line), self.newest.get(())
        return (in_line is None or version.order > in_line) and overall is not None and version.order < overall

    def deployed(self, version: TagVersion) -> None:
        # Register under every line the version belongs to: 1.4.2 (padded 1.4.2.0) under (), 1, 1.4, ...
        padded = version.release + (0,) * max(0, 4 - len(version.release))
        for length in range(len(padded) + 1):
            prefix = padded[:length]
            if prefix not in self.newest or version.order > self.newest[prefix]:
                self.newest[prefix] = version.order


# A name that is a prefix without digits and dotted numbers (v1.2.3, deploy/production/42), in ASCII: its
# version is those numbers, a final release, read here for every tag at once (the others by backfill.versions).
_PLAIN_TAG = r"^[ -/:-~]*([0-9]+(?:\.[0-9]+)*)$"
_FINAL_KEY = f"|{FINAL}||"


def _version_key(version: TagVersion | None) -> str | None:
    """A version's identity as one string: equal exactly where the identities are (see TagVersion.identity)."""
    if version is None:
        return None
    label = version.identity[-1]
    release, detail = ".".join(map(str, version.release)), ".".join(map(str, version.detail))
    return f"{release}|{version.stage}|{detail}|{label}"


def _version_keys(tags: pl.Expr, others: Mapping[str, str | None]) -> pl.Expr:
    """The identity key of the version each tag names (null: none); ``others`` holds those of the non-plain tags."""
    release = (
        tags.str.extract(_PLAIN_TAG, 1)
        .str.replace_all(r"(^|\.)0+([0-9])", "${1}${2}")  # 007 is 7
        .str.replace(r"(\.0)+$", "")  # trailing zeros dropped: 1.4.0 is 1.4
        .str.replace(r"^0$", "")  # and 0.0 is no numbers at all
    )
    looked_up = tags.replace_strict(dict(others), default=None, return_dtype=pl.String) if others else None
    plain = release + pl.lit(_FINAL_KEY)
    return plain if looked_up is None else pl.coalesce(plain, looked_up)


def _keys_of_others(tags: pl.Series) -> dict[str, str | None]:
    """The identity keys of the tags the plain pattern does not read, by the ecosystems' rules (few tags)."""
    others = tags.filter(tags.is_not_null() & ~tags.str.contains(_PLAIN_TAG)).unique().to_list()
    return {tag: _version_key(tag_version(tag)) for tag in others}


def _release_rules(frame: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> list[pl.DataFrame]:
    """Rules 2 and 3, for the sources with a repository (tags: thousands of rows at most).

    Versions are compared by their identity keys, columns computed for all
    rows at once. Rule 3 asks git first, about every row whose commit moved;
    which versions an answer's place had deployed by then is only worked out
    where git says yes (few rows), not for every tag.
    """
    found = [pl.DataFrame(schema=_FOUND_SCHEMA)]
    if not ancestry:
        return found
    mine = frame.filter(pl.col("source").is_in(list(ancestry)))
    if mine.height == 0:
        return found
    previous = frame.select("build_commit_sha", "build_id")[mine.get_column("_previous").fill_null(0)]
    rows = mine.select(
        "_position",
        *PLACE,
        "source",
        (pl.col("status") == "success").fill_null(False).alias("_success"),
        "build_id",
        "build_commit_sha",
        pl.col("_previous").is_not_null().alias("_has_previous"),
    ).with_columns(
        previous.get_column("build_commit_sha").alias("_previous_sha"),
        previous.get_column("build_id").alias("_previous_build"),
    )
    others = _keys_of_others(pl.concat([rows.get_column("build_id"), rows.get_column("_previous_build")]))
    rows = rows.with_columns(
        _version_keys(pl.col("build_id"), others).alias("_key"),
        _version_keys(pl.col("_previous_build"), others).alias("_previous_key"),
    ).with_row_index("_index")
    # Rule 2, looked at only where a version appears more than once in a place (few rows): the build id of
    # the last successful deployment of the same version there, unless the one just before is that version.
    key, previous_key = pl.col("_key"), pl.col("_previous_key")
    earlier = pl.when(pl.col("_success")).then(pl.col("build_id")).shift(1).forward_fill().over([*PLACE, "_key"])
    repeated = rows.filter(key.is_not_null() & pl.lit(may_repeat(rows, [*PLACE, "_key"])))
    same_version = (
        repeated.with_columns(earlier.alias("_earlier"))
        .filter(pl.col("_has_previous") & pl.col("_earlier").is_not_null())
        .filter(~(previous_key.is_not_null() & (key == previous_key)).fill_null(False))
    )
    if same_version.height:
        found.append(
            same_version.select("_position", pl.format("Rollback to {}", pl.col("_earlier")).alias("_rollback_to"))
        )
    # Rule 3's question, for every other row whose commit moved since the previous successful deployment.
    sha, before = pl.col("build_commit_sha"), pl.col("_previous_sha")
    moved = pl.col("_has_previous") & sha.is_not_null() & before.is_not_null() & (sha != before)
    asked = rows.filter(moved & ~pl.col("_index").is_in(same_version.get_column("_index").implode())).select(
        "_index", "source", "build_commit_sha", "_previous_sha"
    )
    older_code: set[int] = set()
    for source in asked.get_column("source").unique(maintain_order=True).to_list():
        pairs = asked.filter(pl.col("source") == source)
        answers = ancestry[source](pairs.select("build_commit_sha", "_previous_sha").rows())
        indexes = pairs.get_column("_index").to_list()
        older_code.update(index for index, answer in zip(indexes, answers, strict=True) if answer)
    if older_code:
        maintenance = _maintenance_releases(rows, older_code)
        marked = rows.filter(pl.col("_index").is_in(sorted(older_code - maintenance)))
        found.append(
            pl.DataFrame(
                [
                    (position, f"Rollback to {commit[:12]} (an ancestor of {before_build})")
                    for position, commit, before_build in marked.select(
                        "_position", "build_commit_sha", "_previous_build"
                    ).iter_rows()
                ],
                schema=_FOUND_SCHEMA,
                orient="row",
            )
        )
    return found


def _maintenance_releases(rows: pl.DataFrame, asked: set[int]) -> set[int]:
    """Of the ``asked`` rows, those whose tag names a new version of an older line, given what came before.

    Only the rows up to the last one asked are read, and of those only the asked rows' places.
    """
    history = rows.head(max(asked) + 1).select("_index", *PLACE, "_success", "build_id")
    places = {(entity, env) for index, entity, env, _, _ in history.iter_rows() if index in asked}
    deployed: dict[tuple[object, ...], _Deployed] = {}
    found = set()
    for index, entity, env, success, build_id in history.iter_rows():
        if (entity, env) not in places:
            continue
        place = deployed.setdefault((entity, env), _Deployed())
        version = tag_version(build_id) if build_id is not None else None
        if index in asked and version is not None and place.is_maintenance(version):
            found.add(index)
        if success and version is not None:
            place.deployed(version)
    return found
