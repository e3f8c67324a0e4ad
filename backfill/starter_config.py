"""``backfill init``'s first config: written from what the repository shows, commented, never over a file.

It looks at the git repository: the ``origin`` remote says GitHub or GitLab
and the owner/repository (credentials in the URL are never copied), the tags
say how releases are named (``v1.2.3`` gives ``pattern = "v*"``). With
``--ci-export`` it adds a ``ci-export`` source for that file. Every choice is
commented, so the file reads as a guide; the next step is a dry run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from backfill.errors import ConfigError
from backfill.extract.git.remote import without_credentials

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")
_SHOWN = 3


@dataclass(frozen=True)
class Remote:
    forge: str | None  # "github", "gitlab" or None
    host: str
    path: str  # owner/repo (GitLab: group/subgroup/project)
    url: str  # without credentials


@dataclass(frozen=True)
class Findings:
    remote: Remote | None = None
    tags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def parse_remote(url: str) -> Remote | None:
    """GitHub or GitLab, host and path from a clone URL (https, ssh:// or scp-like git@host:path)."""
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path
    else:
        matched = _SCP_LIKE.match(url)
        if not matched:
            return None
        host, path = matched["host"].lower(), matched["path"]
    path = path.strip("/").removesuffix(".git").strip("/")
    if not host or path.count("/") < 1:
        return None
    forge = "github" if "github" in host else "gitlab" if "gitlab" in host else None
    return Remote(forge=forge, host=host, path=path, url=without_credentials(url))


def discover(repo: Path) -> Findings:
    """What the repository at ``repo`` shows: its origin remote and its tags."""
    if _git(repo, "rev-parse", "--git-dir") is None:
        return Findings(notes=(f"{repo} is not a git repository: no remote or tags were read",))
    notes: list[str] = []
    origin = _git(repo, "remote", "get-url", "origin")
    remote = parse_remote(origin) if origin else None
    if origin and remote is None:
        notes.append(f"the origin remote ({without_credentials(origin)}) is neither GitHub nor GitLab")
    listed = _git(repo, "tag", "--list") or ""
    return Findings(remote=remote, tags=tuple(sorted(filter(None, listed.splitlines()))), notes=tuple(notes))


def tag_naming(tags: tuple[str, ...]) -> tuple[str, str]:
    """The glob most tags match (what comes before their first digit, then ``*``), and a sentence about it."""
    if not tags:
        return "*", "the repository has no tags yet: every tag will count as a deployment"
    shapes = Counter(_shape(tag) for tag in tags)
    pattern, count = max(shapes.items(), key=lambda item: (item[1], item[0] != "*", item[0]))
    examples = [tag for tag in tags if _shape(tag) == pattern][-_SHOWN:]
    others = [tag for tag in tags if _shape(tag) != pattern]
    sentence = f"{count} of {len(tags)} tags are named like {', '.join(examples)}"
    if others:
        sentence += f"; not matched: {', '.join(others[:_SHOWN])}{' and more' if len(others) > _SHOWN else ''}"
    return pattern, sentence


def _shape(tag: str) -> str:
    digit = re.search(r"\d", tag)
    if digit is None:
        return "*"
    prefix = tag[: digit.start()]
    return f"{prefix}*" if prefix else "[0-9]*"


def render(
    findings: Findings,
    config_dir: Path,
    repo: Path,
    *,
    entity: str | None = None,
    ci_export: Path | None = None,
    preset: str | None = None,
) -> str:
    """The starter config's text."""
    remote = findings.remote
    entity = entity or (remote.path.rsplit("/", 1)[-1] if remote else repo.resolve().name) or "my-app"
    lines = [
        "# backfill's config: written by `backfill init` from what it found. Review every source, then:",
        "#   backfill run --dry-run review.csv      (sends nothing; review.csv holds every event)",
        "#   DEVGRID_API_KEY=... backfill run       (sends, oldest first, once)",
        "# The README's config reference lists every key.",
        *(f"# note: {note}" for note in findings.notes),
        "",
        "[devgrid]",
        'url = "https://prod.api.devgrid.io"   # the dev API: https://api.dev.devgrid.io',
        'api_key_env = "DEVGRID_API_KEY"       # the variable that holds the key; the key never goes in a file',
        "",
        "[state]",
        "# What was sent, so that no run sends it twice: keep it where the next run finds it.",
        'path = ".backfill/state.db"',
        "",
    ]
    export_block = (
        _ci_export_block(ci_export, config_dir, repo, entity, preset or _preset_for(remote)) if ci_export else []
    )
    tags_block = _tags_block(findings, config_dir, repo, entity)
    if export_block:
        lines += export_block
        lines += ["", "# Release tags, instead of the CI export (both at once would count each deployment twice):"]
        lines += [f"# {line}" if line and not line.startswith("#") else line for line in tags_block]
    else:
        lines += tags_block
    lines += _forge_block(remote, entity)
    return "\n".join(lines).rstrip() + "\n"


def _name(entity: str, suffix: str) -> str:
    """A source name (letters, digits, . _ -) from the entity id."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", entity).lstrip("-._") or "app"
    return _quote(f"{base}-{suffix}")


def _tags_block(findings: Findings, config_dir: Path, repo: Path, entity: str) -> list[str]:
    pattern, sentence = tag_naming(findings.tags)
    return [
        "# Each release tag is a deployment to production, at the tag's time.",
        f"# {sentence}.",
        "[[sources]]",
        f"name = {_name(entity, 'tags')}",
        'type = "git-tags"',
        f"repo = {_quote(_relative(repo, config_dir, repo))}",
        f"pattern = {_quote(pattern)}",
        f"entity_id = {_quote(entity)}                  # the DevGrid entity id: check it in DevGrid",
        'env = "production"',
        "# include_prereleases = false         # 2.0.0rc1, 1.4.0-beta.2... are left out unless true",
    ]


def _ci_export_block(path: Path, config_dir: Path, repo: Path, entity: str, preset: str | None) -> list[str]:
    if preset is None:
        raise ConfigError(
            f"--ci-export {path}: say which CI system wrote it with --preset "
            "(github-actions, gitlab-ci, jenkins, circleci, azure-devops)"
        )
    return [
        f"# The CI system's runs, as exported ({preset}); `backfill presets` shows the columns it reads.",
        "# A dry run warns when the export mixes workflows, branches or events, and says which match to add.",
        "[[sources]]",
        f"name = {_name(entity, 'runs')}",
        'type = "ci-export"',
        f"path = {_quote(_relative(path, config_dir, repo))}",
        f"preset = {_quote(preset)}",
        f"entity_id = {_quote(entity)}                  # the DevGrid entity id: check it in DevGrid",
        'env = "production"                     # when the export has no environment column',
        '# match = { name = "Deploy*" }         # keep only the deploy workflow\'s runs',
    ]


def _forge_block(remote: Remote | None, entity: str) -> list[str]:
    if remote is None or remote.forge is None:
        return []
    lines = ["", f"# {remote.url} is on {'GitHub' if remote.forge == 'github' else 'GitLab'}. Its releases or"]
    lines.append("# deployments could be the source instead of the tags (one of them, not both):")
    lines.append("# [[sources]]")
    if remote.forge == "github":
        kind, key, token = "github", f"repo = {_quote(remote.path)}", "GITHUB_TOKEN"
        extra = [] if remote.host == "github.com" else [f"# base_url = {_quote(f'https://{remote.host}/api/v3')}"]
    else:
        kind, key, token = "gitlab", f"project = {_quote(remote.path)}", "GITLAB_TOKEN"
        extra = [] if remote.host == "gitlab.com" else [f"# url = {_quote(f'https://{remote.host}')}"]
    lines += [
        f"# name = {_name(entity, 'deployments')}",
        f'# type = "{kind}-deployments"            # or "{kind}-releases", with env = "production"',
        f"# {key}",
        *extra,
        f"# entity_id = {_quote(entity)}",
        f'# token_env = "{token}"',
    ]
    return lines


def _preset_for(remote: Remote | None) -> str | None:
    return {"github": "github-actions", "gitlab": "gitlab-ci"}.get(remote.forge or "") if remote else None


def _relative(path: Path, base: Path, repo: Path | None = None) -> str:
    """``path`` relative to the config's folder when it is in that folder or the repository, else absolute."""
    target, roots = path.resolve(), [base.resolve(), *([repo.resolve()] if repo is not None else [])]
    if any(target == root or root in target.parents for root in roots):
        return os.path.relpath(target, base.resolve())
    return str(target)


def _quote(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if nothing is there: never over a file, even one made a moment ago."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; init never overwrites a file. Give -c another path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be written ({exc.strerror})") from None


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
