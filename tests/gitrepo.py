"""Real git repositories for tests, built with the git command line in tmp_path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str, date: str | None = None, who: str = "Mona Lisa <mona@example.com>") -> str:
        name, email = who.rsplit(" <", 1)
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email.rstrip(">"),
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email.rstrip(">"),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_SYSTEM": os.devnull,
        }
        if date is not None:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
        result = subprocess.run(["git", *args], cwd=self.path, env=env, capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def commit(self, message: str, date: str) -> str:
        """An empty commit at ``date`` (ISO 8601 with offset); returns its SHA."""
        self.git("commit", "--quiet", "--allow-empty", "-m", message, date=date)
        return self.git("rev-parse", "HEAD")

    def tag(
        self,
        name: str,
        *,
        message: str | None = None,
        date: str | None = None,
        at: str = "HEAD",
        who: str = "Release Bot <releases@example.com>",
    ) -> None:
        """An annotated tag when there is a message, else a lightweight one."""
        if message is None:
            self.git("tag", name, at)
        else:
            self.git("tag", "-a", name, "-m", message, at, date=date, who=who)
