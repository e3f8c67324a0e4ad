"""Which commits each deployment shipped first, and how long each waited: one pass over git's history.

For one entity's successful production deployments in time order, deployment
*i* shipped ``git rev-list SHA_i --not SHA_0 .. SHA_i-1``: the commits it
reaches that no earlier deployment reached. So a rollback ships nothing, and a
commit is never counted twice. Asking git that once per deployment costs a
process each; instead one ``git rev-list --topo-order`` lists every commit any
deployment reaches, children before parents, and each commit takes the
earliest deployment that reaches it, pushed from child to parent in that one
order. The first deployment whose commit git knows is left out of lead time:
everything before it would count as shipped by it.

Git is asked two things per repository, whatever the number of deployments:
which deployed SHAs it knows (``git cat-file --batch-check``) and the history
behind them (``git rev-list``).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from backfill.extract.git.remote import GIT_ENV

_HEX = re.compile(r"^[0-9a-f]{4,64}$")
TIMEOUT = 600  # seconds per git command; a history of millions of commits takes a few

COMMIT_SCHEMA = {"entityId": pl.String, "position": pl.Int64, "lead_hours": pl.Float64}
DEPLOY_SCHEMA = {
    "entityId": pl.String,
    "position": pl.Int64,
    "resolved": pl.Boolean,
    "first": pl.Boolean,
    "commits": pl.Int64,
    "deploy_commit_hours": pl.Float64,
}


@dataclass(frozen=True)
class Shipped:
    """Per commit, the deployment that shipped it first; per deployment, what git said about it.

    ``commits``: entityId, position (the deployment's index in its entity's
    history), lead_hours; the first resolvable deployment's commits are left out.
    ``deploys``: entityId, position, resolved (git knows the SHA), first (the
    deployment left out), commits (how many it shipped first),
    deploy_commit_hours (deployment time - its own commit's time, where it shipped any).
    """

    commits: pl.DataFrame
    deploys: pl.DataFrame


def shipped(repo: Path, deploys: pl.DataFrame) -> Shipped:
    """Lead time inputs for ``deploys`` (entityId, position, at, build_commit_sha) from the repository ``repo``.

    ``position`` numbers each entity's successful production deployments in
    time order from 0, over the whole history (not only the report's window).
    """
    shas = deploys.get_column("build_commit_sha").str.strip_chars().str.to_lowercase()
    wanted = sorted({sha for sha in shas.drop_nulls().to_list() if _HEX.match(sha)})
    full = _resolve(repo, wanted)
    graph = _history(repo, sorted(set(full.values())))
    resolved = shas.replace_strict(full, default=None, return_dtype=pl.String)
    frame = deploys.select("entityId", "position", "at").with_columns(resolved.alias("_full"))
    commit_frames: list[pl.DataFrame] = []
    deploy_frames: list[pl.DataFrame] = []
    for (entity,), rows in frame.sort("entityId", "position").group_by("entityId", maintain_order=True):
        commits, summary = _one_entity(str(entity), rows, graph)
        commit_frames.append(commits)
        deploy_frames.append(summary)
    return Shipped(
        commits=pl.concat(commit_frames) if commit_frames else pl.DataFrame(schema=COMMIT_SCHEMA),
        deploys=pl.concat(deploy_frames) if deploy_frames else pl.DataFrame(schema=DEPLOY_SCHEMA),
    )


@dataclass(frozen=True)
class _Graph:
    order: list[str]  # children before parents
    parents: dict[str, list[str]]
    time: dict[str, int]  # committer time, epoch seconds


def _one_entity(entity: str, rows: pl.DataFrame, graph: _Graph) -> tuple[pl.DataFrame, pl.DataFrame]:
    positions = rows.get_column("position").to_list()
    fulls = rows.get_column("_full").to_list()
    label: dict[str, int] = {}
    for position, sha in zip(positions, fulls, strict=True):
        if sha is not None and sha not in label:
            label[sha] = position
    # Each commit takes the earliest deployment that reaches it; topological order visits children first.
    parents, order = graph.parents, graph.order
    for sha in order:
        mine = label.get(sha)
        if mine is None:
            continue
        for parent in parents[sha]:
            if label.get(parent, math.inf) > mine:
                label[parent] = mine
    first = next((position for position, sha in zip(positions, fulls, strict=True) if sha is not None), None)
    labelled = pl.DataFrame(
        {"sha": list(label), "position": list(label.values()), "ts": [graph.time[sha] for sha in label]},
        schema={"sha": pl.String, "position": pl.Int64, "ts": pl.Int64},
    )
    at = rows.select("position", pl.col("at").dt.epoch("s").alias("_at"), "_full")
    commits = (
        labelled.join(at.select("position", "_at"), on="position", how="inner")
        .with_columns(((pl.col("_at") - pl.col("ts")) / 3600).alias("lead_hours"))
        .sort("position", "ts", "sha")
    )
    per_deploy = commits.group_by("position").agg(pl.len().cast(pl.Int64).alias("commits"))
    own_time = pl.col("_full").replace_strict(graph.time, default=None, return_dtype=pl.Int64)
    summary = (
        at.join(per_deploy, on="position", how="left")
        .with_columns(
            pl.lit(entity).alias("entityId"),
            pl.col("_full").is_not_null().alias("resolved"),
            (pl.col("position") == first if first is not None else pl.lit(False)).alias("first"),
            pl.col("commits").fill_null(0),
        )
        .with_columns(
            pl.when(pl.col("commits") > 0)
            .then((pl.col("_at") - own_time) / 3600)
            .otherwise(None)
            .cast(pl.Float64)
            .alias("deploy_commit_hours")
        )
        .select(*DEPLOY_SCHEMA)
    )
    kept = commits.filter(pl.col("position") != first) if first is not None else commits
    return kept.select(pl.lit(entity).alias("entityId"), "position", "lead_hours"), summary


def _resolve(repo: Path, shas: list[str]) -> dict[str, str]:
    """The full commit SHA of each of ``shas`` that git knows as a commit."""
    if not shas:
        return {}
    lines = "".join(f"{sha}^{{commit}}\n" for sha in shas)
    output = _git(repo, ["cat-file", "--batch-check=%(objectname) %(objecttype)"], lines)
    found: dict[str, str] = {}
    for sha, line in zip(shas, output.splitlines(), strict=False):
        name, _, kind = line.partition(" ")
        if kind == "commit":
            found[sha] = name
    return found


def _history(repo: Path, shas: list[str]) -> _Graph:
    """Every commit the deployed SHAs reach, children first, with parents and committer time."""
    if not shas:
        return _Graph([], {}, {})
    output = _git(repo, ["rev-list", "--topo-order", "--parents", "--timestamp", "--stdin"], "\n".join(shas) + "\n")
    order: list[str] = []
    parents: dict[str, list[str]] = {}
    time: dict[str, int] = {}
    for line in output.splitlines():
        fields = line.split()
        sha = fields[1]
        order.append(sha)
        parents[sha] = fields[2:]
        time[sha] = int(fields[0])
    return _Graph(order, parents, time)


class GitWalkError(Exception):
    """Git could not answer for one repository; the report goes on without its lead time."""


def _git(repo: Path, arguments: list[str], stdin: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *arguments],
            input=stdin.encode(),
            capture_output=True,
            env={**os.environ, **GIT_ENV},
            timeout=TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise GitWalkError("git is not installed (no git on PATH); install it to measure lead time") from None
    except subprocess.TimeoutExpired:
        raise GitWalkError(f"git took longer than {TIMEOUT} s to walk the history") from None
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise GitWalkError(f"git could not walk the history ({lines[-1] if lines else 'it failed'})")
    return result.stdout.decode("utf-8", errors="replace")
