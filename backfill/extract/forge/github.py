"""A PyGithub client set up the way the GitHub sources need it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field

from backfill.extract.base import ExtractContext
from backfill.extract.forge.common import ForgeSource, host_of, read_errors, token

if TYPE_CHECKING:
    from github.Repository import Repository


class GithubSource(ForgeSource):
    repo: str = Field(pattern=r"^[^/\s]+/[^/\s]+$")
    base_url: str = "https://api.github.com"  # GitHub Enterprise: https://HOST/api/v3
    token_env: str = Field(default="GITHUB_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Pause between requests, as GitHub advises, so that history pulls stay under its secondary limits.
    request_interval: float = Field(default=0.25, ge=0, le=10)


@contextmanager
def repository(config: GithubSource, context: ExtractContext) -> Iterator[Repository]:
    """The repository, read with the token if there is one; the client is closed afterwards."""
    from github import Auth, Github

    from backfill.extract.forge.retry import RateLimitRetry

    secret = token(config, config.base_url, context.environ, context.warn)
    client = Github(
        auth=Auth.Token(secret) if secret else None,
        base_url=config.base_url.rstrip("/"),
        per_page=100,  # the most GitHub serves per page
        timeout=whole_seconds(config.timeout),
        retry=RateLimitRetry(max_wait=config.max_rate_limit_wait, sleep=context.sleep, notice=context.notice),
        seconds_between_requests=config.request_interval or None,
        # The first listing is the first request, and reports a repository it cannot see.
        lazy=True,
    )
    try:
        yield client.get_repo(config.repo)
    finally:
        client.close()


def github_errors(config: GithubSource, context: ExtractContext) -> AbstractContextManager[None]:
    from github import GithubException

    return read_errors(
        config,
        context.environ,
        host=host_of(config.base_url),
        subject=f"repository {config.repo}",
        client_errors=(GithubException,),
        timeout=whole_seconds(config.timeout),
    )


def whole_seconds(timeout: float) -> int:
    """PyGithub takes whole seconds; round up, so that 0.5 never becomes no time at all."""
    return max(1, math.ceil(timeout))


def tag_commits(repo: Repository, wanted: Iterable[str], warn: Any) -> dict[str, str]:
    """Commit SHA per tag name, from the tags listing; stops paging once every wanted tag is found."""
    from github import GithubException

    missing = set(wanted)
    found: dict[str, str] = {}
    if not missing:
        return found
    try:
        for tag in repo.get_tags():
            if tag.name in missing:
                found[tag.name] = tag.commit.sha
                missing.discard(tag.name)
                if not missing:
                    break
    except GithubException as exc:
        warn(
            f"{repo.full_name}: the tags listing failed ({exc.status}) before every release's tag was found; "
            f"{len(missing)} releases carry no build_commit_sha"
        )
        return found
    if missing:
        warn(
            f"{repo.full_name}: {len(missing)} release tags are not in the tags listing; they carry no build_commit_sha"
        )
    return found
