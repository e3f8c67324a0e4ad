"""``git-tags``: release tags as past production deployments.

One event per tag: ``build_id`` is the tag name (so a tag and the GitHub or
GitLab release made from it dedupe to one event), ``build_commit_sha`` the
commit it points to (annotated tags peeled), the timestamp the tagger date of
an annotated tag or the commit date of a lightweight one (``time_source``),
``description`` the tag's subject line, ``initiator`` the tagger's email.

All tags are read with one ``git for-each-ref``, run as a plain process, not
one Python object per tag: resolving thousands of tags object by object takes
seconds, the one command a fraction of one.

Pre-release tags are skipped, told by the version the name carries
(:mod:`backfill.versions`), unless ``include_prereleases``; a tag the hotfix
pattern matches is always a deployment.

``repo`` is a local path, a clone URL, or a git bundle; the last two are cloned
(bare, without file contents) into a cache beside the state file and fetched on
every run, with any token given per command (:mod:`.git_remote`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import polars as pl
from pydantic import Field, ValidationInfo, field_validator, model_validator

from backfill.errors import AncestryError, CloneError, ConfigError, GitError, ReadError
from backfill.extract.base import Extracted, Extractor, SourceConfig
from backfill.extract.git.ancestry import ancestors
from backfill.extract.git.remote import (
    GIT_ENV,
    cached_clone,
    credentials_problem,
    failure_line,
    is_url,
    without_credentials,
)
from backfill.extract.mapping import raw_frame
from backfill.extract.patterns import pattern_regex, patterns_regex, regex_problem
from backfill.model import relative_to_config
from backfill.secrets import check_one_word
from backfill.versions import prerelease_reason

# for-each-ref fields, in this order; %1f (unit separator) cannot occur in any of them.
_FIELDS = {
    "tag": "%(refname:strip=2)",
    "type": "%(objecttype)",
    "object": "%(objectname)",
    "peeled_type": "%(*objecttype)",
    "peeled": "%(*objectname)",
    "tagger_date": "%(taggerdate:iso-strict)",
    "tagger_email": "%(taggeremail)",
    "commit_date": "%(committerdate:iso-strict)",
    "peeled_commit_date": "%(*committerdate:iso-strict)",
    "subject": "%(contents:subject)",
}
_FORMAT = "%1f".join(_FIELDS.values())
# What would point git at another repository than the one asked about.
_DISCOVERY = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_CEILING_DIRECTORIES")


class GitTagsSource(SourceConfig):
    path_keys: ClassVar[tuple[str, ...]] = ("repo",)  # a local repository, or a bundle file
    type: Literal["git-tags"]
    repo: str = "."
    pattern: str | list[str] = "*"
    # Pre-releases are told by the version in the tag name (see backfill.versions), not by exclude.
    include_prereleases: bool = False
    exclude: list[str] = Field(default_factory=list)
    env_from_tag: str | None = None
    hotfix_pattern: str | list[str] | None = None
    time_source: Literal["auto", "tagger", "commit"] = "auto"
    build_url: str | None = None
    # For an https clone URL: the environment variable holding a token, and the user name it goes with.
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    token_user: str = Field(default="x-access-token", min_length=1)

    @field_validator("repo")
    @classmethod
    def _relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        return value if is_url(value) else relative_to_config(value, info)

    @field_validator("pattern", "exclude", "hotfix_pattern")
    @classmethod
    def _valid_patterns(cls, value: str | list[str] | None) -> str | list[str] | None:
        for pattern in [value] if isinstance(value, str) else value or []:
            _check_regex(pattern_regex(pattern))
        return value

    @field_validator("env_from_tag")
    @classmethod
    def _has_env_group(cls, value: str | None) -> str | None:
        if value is not None and "env" not in _check_regex(value.removeprefix("re:")).groupindex:
            raise ValueError("must be a regular expression with a group named env, like re:^deploy/(?P<env>[a-z]+)/")
        return value

    @model_validator(mode="after")
    def _one_env(self) -> GitTagsSource:
        if self.entity_id is None:
            raise ValueError('entity_id: is required; set entity_id = "<DevGrid entity id>"')
        if (self.env is None) == (self.env_from_tag is None):
            raise ValueError('env: set env = "production", or env_from_tag = "re:...(?P<env>...)...", not both')
        if is_url(self.repo):
            problem = credentials_problem(self.repo, self.token_env)
            if problem is not None:
                raise ValueError(": ".join(problem))
        elif self.token_env is not None:
            raise ValueError("token_env: is for https:// clone URLs; repo is a path")
        return self


def _check_regex(regex: str) -> re.Pattern[str]:
    problem = regex_problem(regex)
    if problem is not None:
        raise ValueError(f"'{regex}' is not a regular expression backfill can use ({problem})")
    return re.compile(regex)


class GitTagsExtractor(Extractor):
    type_name = "git-tags"
    config_model = GitTagsSource

    def extract(self) -> Extracted:
        config = self.config
        assert isinstance(config, GitTagsSource)
        repo = self._repository(config)
        try:
            tags = self._read_tags(repo)
        except GitError as exc:
            raise ReadError(f"{config.repo}: {exc}") from None
        if tags.height and config.pattern != "*":
            matching = tags.get_column("tag").str.contains(patterns_regex(config.pattern))
            if not matching.any():
                seen = ", ".join(tags.get_column("tag").head(8).to_list())
                more = f" and {tags.height - 8} more" if tags.height > 8 else ""
                self.context.warn(
                    f"source '{config.name}': pattern {_shown(config.pattern)} matches none of the "
                    f"{tags.height} tags ({seen}{more})"
                )
        self._warn_about_history(config, repo, tags)
        commit_times = _commit_times(tags)
        tags = tags.with_columns(_prereleases(tags.get_column("tag")))
        fields = self._fields(config)
        if config.time_source == "auto":
            self._warn_about_taggerless(config, tags, fields)
        return Extracted(
            frame=raw_frame(tags, fields),
            status_vocab={"success": "success"},
            is_ancestor=_ancestry(repo, commit_times, self.context.warn, config.name),
        )

    def _warn_about_history(self, config: GitTagsSource, git_dir: Path, tags: pl.DataFrame) -> None:
        """What a CI checkout leaves out by default: the tags, and the history before its last commit."""
        where = without_credentials(config.repo)
        if tags.height == 0:
            self.context.warn(
                f"source '{config.name}': {where} has no tags, so there is nothing to read; a CI checkout "
                "fetches none by default: use fetch-depth: 0 (actions/checkout) or run git fetch --tags first"
            )
        if (git_dir / "shallow").exists():
            self.context.warn(
                f"source '{config.name}': {where} is a shallow clone: the history before its cut is missing, "
                "so rollbacks cannot be told by ancestry; fetch it all with fetch-depth: 0 (actions/checkout) "
                "or git fetch --unshallow --tags"
            )

    def _warn_about_taggerless(self, config: GitTagsSource, tags: pl.DataFrame, fields: dict[str, pl.Expr]) -> None:
        """Annotated tags without a tagger (git's own v0.99) are dated by their commit; say which."""
        taggerless = (
            tags.filter((pl.col("type") == "tag") & pl.col("tagger_date").is_null())
            .select("tag", fields["skip_reason"].alias("skip"))
            .filter(pl.col("skip").is_null())
            .get_column("tag")
        )
        if taggerless.len():
            names = ", ".join(taggerless.head(8).to_list())
            more = f" and {taggerless.len() - 8} more" if taggerless.len() > 8 else ""
            count = "1 annotated tag has" if taggerless.len() == 1 else f"{taggerless.len()} annotated tags have"
            self.context.warn(
                f"source '{config.name}': {count} no tagger date ({names}{more}); the commit's date is used instead"
            )

    # -- the repository -------------------------------------------------------------------------

    def _repository(self, config: GitTagsSource) -> Path:
        if shutil.which("git") is None:
            raise ReadError("git is not installed (no git on PATH); install it (apt-get install git) to read tags")
        location = config.repo
        if is_url(location) or (Path(location).is_file() and location.endswith(".bundle")):
            return self._cached_clone(config, location)
        path = Path(location)
        if not path.exists():
            raise ReadError(f"repo {location} does not exist; check repo (relative to the config file)")
        git_dir = _git_dir(path)
        if git_dir is None:
            raise ReadError(f"{location} is not a git repository; point repo at one")
        return git_dir

    def _cached_clone(self, config: GitTagsSource, location: str) -> Path:
        token = None
        if config.token_env is not None:
            value = self.context.environ.get(config.token_env, "").strip()
            if not value:
                raise ReadError(
                    f"{config.token_env} is not set: export {config.token_env}=<token> (named by token_env)",
                )
            try:
                check_one_word(value, f"${config.token_env}: the token", "must hold the token alone, on one line")
            except ConfigError as exc:
                raise ReadError(str(exc)) from None
            token = (config.token_user, value)
        try:
            return cached_clone(self.context.cache_dir or Path(".backfill"), location, token)
        except CloneError as exc:
            raise ReadError(
                f"cannot fetch {location} ({exc}); check repo and your access to it", transient=exc.transient
            ) from None

    def _read_tags(self, git_dir: Path) -> pl.DataFrame:
        output = _git(git_dir, "for-each-ref", f"--format={_FORMAT}", "refs/tags")
        lines = [line for line in output.split("\n") if line]
        frame = (
            pl.DataFrame({"line": lines}, schema={"line": pl.String})
            .select(pl.col("line").str.split_exact("\x1f", len(_FIELDS) - 1).struct.rename_fields(list(_FIELDS)))
            .unnest("line")
            .with_columns(pl.all().replace("", None))
            .with_row_index("row", offset=1)
        )
        return _peel_nested(git_dir, frame)

    # -- the mapping ------------------------------------------------------------------------------

    def _fields(self, config: GitTagsSource) -> dict[str, pl.Expr]:
        tag = pl.col("tag")
        annotated = pl.col("type") == "tag"
        commit = pl.when(annotated).then(pl.col("peeled")).otherwise(pl.col("object"))
        target_type = pl.when(annotated).then(pl.col("peeled_type")).otherwise(pl.col("type"))
        commit_date = pl.when(annotated).then(pl.col("peeled_commit_date")).otherwise(pl.col("commit_date"))
        timestamp = {
            # An annotated tag with no tagger (git's v0.99) is dated by its commit, and said so.
            "auto": pl.when(annotated).then(pl.coalesce("tagger_date", commit_date)).otherwise(pl.col("commit_date")),
            "tagger": pl.col("tagger_date"),
            "commit": commit_date,
        }[config.time_source]
        fields: dict[str, pl.Expr] = {
            "entityId": pl.lit(config.entity_id),
            "build_id": tag,
            "build_commit_sha": commit,
            "timestamp": timestamp,
            "status": pl.lit("success"),
            "description": pl.col("subject"),
            "initiator": pl.col("tagger_email").str.strip_chars("<>"),
        }
        skip: list[tuple[pl.Expr, pl.Expr]] = [
            (target_type != "commit", pl.format("the tag points at a {}, not a commit", target_type)),
            (
                ~tag.str.contains(patterns_regex(config.pattern)),
                pl.lit(f"tag matches none of {_shown(config.pattern)}"),
            ),
        ]
        if config.exclude:
            skip.append(
                (
                    tag.str.contains(patterns_regex(config.exclude)),
                    pl.lit(f"tag matches exclude {_shown(config.exclude)}"),
                )
            )
        if not config.include_prereleases:
            # A tag the hotfix pattern names went to production, whatever its version says.
            hotfix = tag.str.contains(patterns_regex(config.hotfix_pattern)) if config.hotfix_pattern else pl.lit(False)
            skip.append((pl.col("_prerelease").is_not_null() & ~hotfix, pl.col("_prerelease")))
        if config.env_from_tag is not None:
            regex = config.env_from_tag.removeprefix("re:")
            group = re.compile(regex).groupindex["env"]
            fields["env"] = tag.str.extract(regex, group)
            skip.append((fields["env"].is_null(), pl.lit(f"tag does not match env_from_tag {config.env_from_tag}")))
        else:
            fields["env"] = pl.lit(config.env)
        if config.hotfix_pattern is not None:
            fields["deployment_type"] = pl.when(tag.str.contains(patterns_regex(config.hotfix_pattern))).then(
                pl.lit("hotfix")
            )
        if config.build_url is not None:
            fields["build_url"] = _template(config.build_url, {"tag": tag, "sha": commit})
        reason: pl.Expr = pl.lit(None, dtype=pl.String)
        for condition, message in reversed(skip):
            reason = pl.when(condition.fill_null(False)).then(message).otherwise(reason)
        fields["skip_reason"] = reason
        if config.time_source == "tagger":
            fields["reject_reason"] = (
                pl.when(~annotated)
                .then(pl.lit('a lightweight tag has no tagger date; use time_source = "auto" or "commit"'))
                .when(pl.col("tagger_date").is_null())
                .then(pl.lit('the annotated tag has no tagger date; use time_source = "auto" or "commit"'))
            )
        return fields


def _prereleases(tags: pl.Series) -> pl.Series:
    """Why each tag is a pre-release ("pre-release 2.0.0rc1 (PEP 440)"), else null.

    Only names with a letter or a dash after a number can be pre-releases, so
    the version rules read those alone.
    """
    possible = tags.filter(tags.str.contains(r"\d.*[A-Za-z-]")).unique().to_list()
    reasons = {tag: reason for tag in possible if (reason := prerelease_reason(tag)) is not None}
    return tags.replace_strict(reasons, default=None, return_dtype=pl.String).alias("_prerelease")


def _template(template: str, values: dict[str, pl.Expr]) -> pl.Expr:
    """``https://x/releases/tag/{tag}`` as an expression; other braces stay as they are."""
    parts: list[pl.Expr] = []
    for piece in re.split(r"(\{(?:tag|sha)\})", template):
        if piece in ("{tag}", "{sha}"):
            parts.append(values[piece[1:-1]])
        elif piece:
            parts.append(pl.lit(piece))
    return pl.concat_str(parts)


def _peel_nested(git_dir: Path, frame: pl.DataFrame) -> pl.DataFrame:
    """Tags of tags: for-each-ref peels one level; git rev-parse peels the rest (rare)."""
    nested = frame.filter(pl.col("peeled_type") == "tag")
    if nested.height == 0:
        return frame
    names = nested.get_column("tag").to_list()
    peeled = _git(git_dir, "rev-parse", *(f"refs/tags/{name}^{{commit}}" for name in names)).split()
    shown = _git(git_dir, "show", "-s", "--format=%H%x1f%cI", *peeled).splitlines()
    dates = dict(line.split("\x1f") for line in shown)
    fixes = pl.DataFrame(
        {"tag": names, "_peeled": peeled, "_date": [dates.get(sha) for sha in peeled]},
        schema={"tag": pl.String, "_peeled": pl.String, "_date": pl.String},
    )
    return (
        frame.join(fixes, on="tag", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("_peeled", "peeled").alias("peeled"),
            pl.when(pl.col("_peeled").is_not_null())
            .then(pl.lit("commit"))
            .otherwise(pl.col("peeled_type"))
            .alias("peeled_type"),
            pl.coalesce("_date", "peeled_commit_date").alias("peeled_commit_date"),
        )
        .drop("_peeled", "_date")
    )


def _commit_times(tags: pl.DataFrame) -> dict[str, int]:
    """Commit date per tagged commit, for the ancestry rule's cheap first test."""
    if tags.height == 0:
        return {}
    annotated = pl.col("type") == "tag"
    pairs = tags.select(
        pl.when(annotated).then(pl.col("peeled")).otherwise(pl.col("object")).alias("sha"),
        pl.when(annotated).then(pl.col("peeled_commit_date")).otherwise(pl.col("commit_date")).alias("date"),
    ).drop_nulls()
    instants = pairs.get_column("date").str.to_datetime(time_zone="UTC", strict=False).dt.epoch("s")
    return dict(zip(pairs.get_column("sha").to_list(), instants.to_list(), strict=True))


def _ancestry(
    git_dir: Path, commit_times: dict[str, int], warn: Callable[[str], None], source: str
) -> Callable[[Sequence[tuple[str, str]]], list[bool]]:
    """Whether each commit is an ancestor of the other: one walk of the history for all pairs.

    A commit dated after the later one is not asked about (the cheap first test).
    """

    def is_ancestor(pairs: Sequence[tuple[str, str]]) -> list[bool]:
        times = commit_times.get  # one comprehension, no call per pair: a tag history asks about every tag
        asked = [
            (commit, later)
            for commit, later in pairs
            if commit != later
            and (when := times(commit)) is not None
            and (later_when := times(later)) is not None
            and when <= later_when
        ]
        if not asked:
            return [False] * len(pairs)
        try:
            answers = dict(zip(asked, ancestors(git_dir, asked, {**os.environ, **GIT_ENV}), strict=True))
        except (AncestryError, OSError) as exc:
            warn(
                f"source '{source}': could not ask git which commits are ancestors ({exc}); "
                "no rollback is inferred from ancestry"
            )
            answers = {}
        return [answers.get(pair, False) for pair in pairs]

    return is_ancestor


def _git_dir(path: Path) -> Path | None:
    """The git folder of the repository at ``path`` itself (a work tree or a bare one), not of a folder above it."""
    environ = {name: value for name, value in os.environ.items() if name not in _DISCOVERY}
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--absolute-git-dir"],
            cwd=path,
            env={**environ, **GIT_ENV, "GIT_CEILING_DIRECTORIES": str(path.resolve().parent)},
            capture_output=True,
            check=False,
        )
    except OSError:  # a file, or a folder we may not enter
        return None
    output = found.stdout.decode("utf-8", errors="surrogateescape").strip()
    return Path(output) if found.returncode == 0 and output else None


def _git(git_dir: Path, *args: str) -> str:
    """git's output, run as a plain process: the tags need no more than one command's text."""
    result = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], env={**os.environ, **GIT_ENV}, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise GitError(f"git {args[0]} failed: {failure_line(result.stderr.decode('utf-8', errors='replace'))}")
    return result.stdout.decode("utf-8", errors="surrogateescape")


def _shown(patterns: str | Sequence[str]) -> str:
    return patterns if isinstance(patterns, str) else ", ".join(patterns)
