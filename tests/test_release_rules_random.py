"""The release-line rules (rollback rules 2 and 3) read the versions of all tags at once, in columns.

They must mark exactly what the rules read tag by tag did: the one-row-at-a-time
version below is the rules as they were, kept as the reference, and random
histories (versions written many ways, failures, several places and sources,
other sources' build ids, commits that repeat and move) are given to both.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pytest

from backfill.plan import rollbacks
from backfill.plan.rollbacks import _FOUND_SCHEMA, PLACE, IsAncestor, _last_shipped
from backfill.versions import TagVersion, tag_version

# Tag names as teams write them, so that the same version comes back written another way.
TAGS = [
    "v1.0.0", "1.0", "v1", "release-1.0.0", "v01.0.0", "rel_1_0_0", "v1.0.0-rc1", "v1.0.0rc2", "1.0.0-hotfix",
    "v1.0.1", "v1.0.01", "1.0.1", "v1.0.2", "v1.1.0", "v1.1", "v1.1.1", "v1.1.2", "v1.2.0", "v1.2.1", "v2.0.0",
    "v2", "2.0.0b1", "v2.0.0-beta.1", "v2.0.0-BETA.1", "v2.0.post1", "v2.0.0.dev3", "8.0-m01", "8.0-M01",
    "1.2.3+build.5", "deploy/production/42", "deploy/staging/42", "42", "43", "040", "0.0", "0", "v0.0.1",
    "2024-01-15", "release-2024.01.15", "nightly", "latest", "v\u0661.\u0662", "1.2", "v1.2", "v10.0", "v1.10",
    "99999999999999999999999.1", "99999999999999999999999.1.0", "v1..2", "v1.2.", "ü1.2", "rel_0_0",
]  # fmt: skip
COMMITS = [f"{n:040x}" for n in range(1, 9)]
MAINTENANCE_FOUND: list[int] = []  # what the reference told apart as new versions of older lines


@dataclass
class _Deployed:
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


def _moved(sha: str | None, before: str | None) -> bool:
    return sha is not None and before is not None and sha != before


def _same_version(version: TagVersion | None, tag: str | None) -> bool:
    other = tag_version(tag) if tag is not None else None
    return version is not None and other is not None and version.identity == other.identity


def reference_rules(frame: pl.DataFrame, ancestry: Mapping[str, IsAncestor]) -> list[pl.DataFrame]:
    """Rules 2 and 3, for the sources with a repository (tags: thousands of rows at most).

    Rule 3 asks git first, about every row whose commit moved; which versions
    an answer's place had deployed by then is only worked out where git says
    yes (few rows), not for every tag.
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
        pl.struct("entityId", "env").alias("_place"),
        "source",
        pl.col("status") == "success",
        "build_id",
        "build_commit_sha",
        pl.col("_previous").is_not_null(),
        previous.get_column("build_commit_sha").alias("_previous_sha"),
        previous.get_column("build_id").alias("_previous_build"),
    ).rows()
    versions = [tag_version(row[4]) if row[4] is not None else None for row in rows]
    tags: dict[tuple[object, object], dict[tuple[object, ...], str]] = {}
    same_version: list[tuple[int, str]] = []
    moved: dict[str, list[int]] = {}
    for index, (position, place, source, success, build_id, sha, has_previous, before_sha, before_build) in enumerate(
        rows
    ):
        version, place_tags = versions[index], tags.setdefault(tuple(place.values()), {})
        earlier = place_tags.get(version.identity) if version is not None and has_previous else None
        if earlier is not None and not _same_version(version, before_build):
            same_version.append((position, f"Rollback to {earlier}"))
        elif has_previous and _moved(sha, before_sha):
            moved.setdefault(source, []).append(index)
        if success and version is not None:
            place_tags[version.identity] = build_id
    if same_version:
        found.append(pl.DataFrame(same_version, schema=_FOUND_SCHEMA, orient="row"))
    older_code = {
        index
        for source, indexes in moved.items()
        for index, answer in zip(indexes, ancestry[source]([(rows[i][5], rows[i][7]) for i in indexes]), strict=True)
        if answer
    }
    if older_code:
        maintenance = _maintenance_releases(rows, versions, older_code)
        found.append(
            pl.DataFrame(
                [
                    (rows[i][0], f"Rollback to {rows[i][5][:12]} (an ancestor of {rows[i][8]})")
                    for i in sorted(older_code - maintenance)
                ],
                schema=_FOUND_SCHEMA,
                orient="row",
            )
        )
    return found


def _maintenance_releases(rows: list[tuple[Any, ...]], versions: list[TagVersion | None], asked: set[int]) -> set[int]:
    """Of the ``asked`` rows, those whose tag names a new version of an older line, given what came before."""
    places = {tuple(rows[i][1].values()) for i in asked}
    deployed: dict[tuple[object, ...], _Deployed] = {}
    found = set()
    for index, row in enumerate(rows):
        place = tuple(row[1].values())
        if place not in places:
            continue
        history = deployed.setdefault(place, _Deployed())
        version = versions[index]
        if index in asked and version is not None and history.is_maintenance(version):
            found.add(index)
        if row[3] and version is not None:
            history.deployed(version)
    MAINTENANCE_FOUND.append(len(found))
    return found


def _history(rng: random.Random) -> pl.DataFrame:
    size = rng.choice([0, 1, 2, 5, 12, 40, 90])
    places = rng.choice([[("shop", "production")], [("shop", "production"), ("shop", "staging"), ("cart", None)]])
    sources = rng.choice([["tags"], ["tags", "runs"], ["tags", "more-tags", "runs"]])
    tags = rng.sample(TAGS, rng.choice([3, 8, len(TAGS)]))
    commits = COMMITS[: rng.choice([2, 4, 8])]
    rows = []
    for _ in range(size):
        entity, env = rng.choice(places)
        rows.append(
            {
                "entityId": entity,
                "env": env,
                "status": rng.choice(["success", "success", "success", "failed", None]),
                "build_id": rng.choice(tags) if rng.random() > 0.03 else None,
                "build_commit_sha": rng.choice(commits) if rng.random() > 0.05 else None,
                "source": rng.choice(sources),
                "deployment_type": None,
                "description": None,
            }
        )
    schema = dict.fromkeys(["entityId", "env", "status", "build_id", "build_commit_sha", "source"], pl.String)
    events = pl.DataFrame(rows, schema={**schema, "deployment_type": pl.String, "description": pl.String})
    return events.with_row_index("_position").with_columns(_last_shipped(pl.col("_position"), PLACE).alias("_previous"))


def _ancestry(rng: random.Random, sources: Sequence[str], calls: list[Any]) -> dict[str, IsAncestor]:
    older = {(a, b) for a in COMMITS for b in COMMITS if a != b and rng.random() < 0.5}

    def asker(source: str) -> IsAncestor:
        def is_ancestor(pairs: Sequence[tuple[str, str]]) -> list[bool]:
            calls.append((source, list(pairs)))
            return [tuple(pair) in older for pair in pairs]

        return is_ancestor

    return {source: asker(source) for source in sources}


def _marks(found: list[pl.DataFrame]) -> list[tuple[Any, ...]]:
    return pl.concat(found, how="vertical").rows()


@pytest.mark.parametrize("seed", range(400))
def test_the_release_line_rules_mark_what_the_rules_read_tag_by_tag_did(seed: int) -> None:
    rng = random.Random(seed)
    frame = _history(rng)
    with_repository = rng.choice([[], ["tags"], ["tags", "more-tags"], ["runs", "tags"]])
    before_calls: list[Any] = []
    after_calls: list[Any] = []
    expected = _marks(reference_rules(frame, _ancestry(random.Random(seed), with_repository, before_calls)))
    found = rollbacks._release_rules(frame, _ancestry(random.Random(seed), with_repository, after_calls))
    assert _marks(found) == expected
    assert after_calls == before_calls  # git is asked the same questions, in the same order
    assert all(part.schema == _FOUND_SCHEMA for part in found)


def test_the_random_histories_reach_every_rule() -> None:
    """The comparison above is only worth as much as what its histories make the rules find."""
    same_version = older_code = 0
    MAINTENANCE_FOUND.clear()
    for seed in range(400):
        rng = random.Random(seed)
        frame = _history(rng)
        with_repository = rng.choice([[], ["tags"], ["tags", "more-tags"], ["runs", "tags"]])
        found = reference_rules(frame, _ancestry(random.Random(seed), with_repository, []))
        texts = [text for part in found for text in part.get_column("_rollback_to").to_list()]
        same_version += sum("an ancestor of" not in text for text in texts)
        older_code += sum("an ancestor of" in text for text in texts)
    assert same_version > 100 and older_code > 100 and sum(MAINTENANCE_FOUND) > 20
