"""A python-gitlab client set up the way the GitLab sources need it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from pydantic import Field

from backfill.extract.base import ExtractContext
from backfill.extract.forge.common import ForgeSource, host_of, read_errors, token

if TYPE_CHECKING:
    from gitlab.v4.objects import Project


class GitlabSource(ForgeSource):
    url: str = "https://gitlab.com"  # self-managed GitLab: its own URL
    project: str = Field(min_length=1)  # a path (group/subgroup/name) or a numeric id
    token_env: str = Field(default="GITLAB_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


@contextmanager
def project(config: GitlabSource, context: ExtractContext) -> Iterator[Project]:
    """The project, lazily: the first listing is the first request, and reports a missing project.

    List calls pass obey_rate_limit=False: the session's retry policy handles 429,
    so python-gitlab must not wait as well.
    """
    import gitlab
    import requests
    from requests.adapters import HTTPAdapter

    from backfill.extract.forge.retry import RateLimitRetry

    secret = token(config, config.url, context.environ, context.warn)
    session = requests.Session()
    retry = RateLimitRetry(max_wait=config.max_rate_limit_wait, sleep=context.sleep, notice=context.notice)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    client = gitlab.Gitlab(
        config.url.rstrip("/"), private_token=secret, timeout=config.timeout, per_page=100, session=session
    )
    project_id: str | int = int(config.project) if config.project.isdigit() else config.project
    try:
        yield client.projects.get(project_id, lazy=True)
    finally:
        session.close()


def gitlab_errors(config: GitlabSource, context: ExtractContext) -> AbstractContextManager[None]:
    from gitlab import GitlabError

    return read_errors(
        config,
        context.environ,
        host=host_of(config.url),
        subject=f"project {config.project}",
        client_errors=(GitlabError,),
    )
