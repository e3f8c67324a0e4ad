"""The version in a tag name, by PEP 440 and SemVer, after any prefix."""

from __future__ import annotations

import pytest

from backfill.versions import prerelease_reason, tag_version


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("2.0.0rc1", "pre-release 2.0.0rc1 (PEP 440)"),
        ("24.1b1", "pre-release 24.1b1 (PEP 440)"),
        ("v2.12.0a1", "pre-release 2.12.0a1 (PEP 440)"),
        ("8.1.0.dev0", "pre-release 8.1.0.dev0 (PEP 440)"),
        ("rel_2_0_0b1", "pre-release 2.0.0b1 (PEP 440)"),
        ("rel_0_4beta1", "pre-release 0.4b1 (PEP 440)"),
        ("curl-7_9_3-pre1", "pre-release 7.9.3rc1 (PEP 440)"),
        ("8.0-m01", "pre-release 8.0-m01 (SemVer)"),
        ("v1.15.0-dev", "pre-release 1.15.0.dev0 (PEP 440)"),
        ("v1.5.0-alpha20230405", "pre-release 1.5.0a20230405 (PEP 440)"),
        ("v2.35.0-rc2", "pre-release 2.35.0rc2 (PEP 440)"),
        ("release-3.1.0-beta.2", "pre-release 3.1.0b2 (PEP 440)"),
        ("v1.0.0-SNAPSHOT", "pre-release 1.0.0-SNAPSHOT (SemVer)"),
        ("v5.0.0-canary.3", "pre-release 5.0.0-canary.3 (SemVer)"),
        ("v1.0.0-0.3.7", "pre-release 1.0.0-0.3.7 (SemVer)"),
        ("1.0.0-RC1", "pre-release 1.0.0rc1 (PEP 440)"),
        ("api/v1.2.3-preview.1", "pre-release 1.2.3rc1 (PEP 440)"),
        ("go1.21rc2", "pre-release 1.21rc2 (PEP 440)"),
        ("k8s-v1.2.3-rc1", "pre-release 1.2.3rc1 (PEP 440)"),
        ("1.0.post1.dev0", "pre-release 1.0.post1.dev0 (PEP 440)"),
    ],
)
def test_pre_releases_by_the_ecosystems_rules(tag: str, reason: str) -> None:
    assert prerelease_reason(tag) == reason


@pytest.mark.parametrize(
    "tag",
    [
        "v2.0.0",
        "2.0",
        "curl-7_9_3",
        "1.0.post1",
        "v1.2.3+build.5",
        "release-1.2.3",
        "rel_1_4_0",
        "jdk-21+35",
        "v1.0-1",  # PEP 440: a post-release
        "release-2024-01-15",  # a date, not a version
        "deploy/production/42",
        "docs-2024",
        "nightly",
        "",
    ],
)
def test_final_versions_and_names_without_one_are_not_pre_releases(tag: str) -> None:
    assert prerelease_reason(tag) is None


def test_lines_and_order() -> None:
    maint, newer = tag_version("v2.30.3"), tag_version("v2.35.2")
    assert maint is not None and newer is not None
    assert (maint.line, newer.line) == ((2, 30), (2, 35))
    assert tag_version("1.4.0").line == (1,)  # type: ignore[union-attr]
    ordered = ["1.0.dev0", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1"]
    orders = [tag_version(tag).order for tag in ordered]  # type: ignore[union-attr]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert tag_version("v1.4").order == tag_version("release-1.4.0").order  # type: ignore[union-attr]
