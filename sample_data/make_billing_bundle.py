"""Build sample_data/billing.bundle: a small, made-up release history for the demo.

Usage: python sample_data/make_billing_bundle.py

Every name and date is fixed, so the bundle (and its commit SHAs) come out the
same on every machine. The history has what real release tags have: annotated
and lightweight tags, time zones other than UTC, a release candidate, a hotfix,
a tag that is not a release, and a re-tag of an older commit (a rollback).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

HISTORY = [
    # (commit message, commit date, [(tag, annotated message or None, tag date, tagger)])
    ("Invoices as PDF", "2025-01-07T09:12:00+01:00", [("v2.0.0", "Release 2.0.0", "2025-01-07T10:00:00+01:00", "ana")]),
    (
        "Tax rules for 2025",
        "2025-01-14T16:40:00-05:00",
        [
            ("v2.1.0-rc1", "Release candidate 2.1.0", "2025-01-14T17:00:00-05:00", "ana"),
            ("v2.1.0", "Release 2.1.0", "2025-01-15T08:30:00-05:00", "ana"),
        ],
    ),
    (
        "Fix VAT rounding",
        "2025-01-16T23:10:00+09:00",
        [
            ("v2.1.1-hotfix", "Hotfix: VAT rounding", "2025-01-16T23:30:00+09:00", "kenji"),
        ],
    ),
    (
        "Docs for the API",
        "2025-01-20T11:00:00+00:00",
        [("docs-2025-01", "Docs snapshot", "2025-01-20T11:05:00+00:00", "ana")],
    ),
    ("Faster invoice search", "2025-01-28T14:00:00+00:00", [("v2.2.0", None, None, None)]),
    ("Back to 2.1.1 after a slow search", "2025-01-29T09:00:00+00:00", []),
]
PEOPLE = {"ana": "Ana Souza <ana@billing.example>", "kenji": "Kenji Sato <kenji@billing.example>"}


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        repo = Path(work)
        git(repo, "init", "--quiet", "--initial-branch=main")
        for message, date, tags in HISTORY:
            git(repo, "commit", "--quiet", "--allow-empty", "-m", message, date=date, who=PEOPLE["ana"])
            for name, tag_message, tag_date, tagger in tags:
                if tag_message is None:
                    git(repo, "tag", name)
                else:
                    git(repo, "tag", "-a", name, "-m", tag_message, date=tag_date, who=PEOPLE[str(tagger)])
        # The rollback: 2.1.1's commit released again, after 2.2.0.
        hotfix = git(repo, "rev-parse", "v2.1.1-hotfix^{commit}")
        git(
            repo,
            "tag",
            "-a",
            "v2.2.1",
            "-m",
            "Roll back to 2.1.1",
            hotfix,
            date="2025-01-29T09:30:00+00:00",
            who=PEOPLE["kenji"],
        )
        git(repo, "bundle", "create", "--quiet", str(HERE / "billing.bundle"), "--all")
    print(f"wrote {HERE / 'billing.bundle'}")


def git(repo: Path, *args: str, date: str | None = None, who: str = PEOPLE["ana"]) -> str:
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
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    main()
