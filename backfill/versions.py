"""The version a tag name carries, read by the ecosystems' own rules.

A tag name is a prefix (``v``, ``rel_``, ``curl-``, ``release/``, anything up
to a number) and a version; underscores between numbers are dots
(``rel_2_0_0b1`` is 2.0.0b1). The version is read by PEP 440 first (through
``packaging``: ``2.0.0rc1``, ``24.1b1``, ``8.1.0.dev0``, ``7.9.3-pre1``,
``1.15.0-dev`` are pre-releases; ``1.0.post1`` and ``1.2.3+build.5`` are
not), then by SemVer (``8.0-m01``, ``1.0.0-SNAPSHOT``: anything after a ``-``
that PEP 440 does not read is a pre-release identifier). A name with no
number, or none that reads as a version (``2024-01-15`` under SemVer needs a
dot), carries no version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from packaging.version import InvalidVersion, Version

_BETWEEN_NUMBERS = re.compile(r"(?<=\d)_(?=\d)")
# Where a version may start: a number that does not continue a dotted one.
_START = re.compile(r"(?<![\d.])\d")
_DATE_GOES_ON = re.compile(r"\d-$")
_PLAIN_TAG = re.compile(r"[^\d]*(\d+(?:\.\d+)*)")
_PLAIN = re.compile(r"\d+(?:\.\d+)*")
_SEMVER = re.compile(
    r"(?P<release>\d+(?:\.\d+)+)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_PHASES = {"a": 0, "b": 1, "rc": 2}
# How far along its release a version is, for ordering versions that share release numbers.
DEV_OF_FINAL, PRE, FINAL, POST = 0, 1, 2, 3


@dataclass(frozen=True)
class TagVersion:
    text: str  # as the scheme writes it: "2.0.0rc1" (PEP 440, normalized), "8.0-m01" (SemVer, as read)
    scheme: str  # "PEP 440" or "SemVer"
    release: tuple[int, ...]  # the release numbers, trailing zeros dropped: 1.4.0 is (1, 4)
    is_prerelease: bool
    stage: int  # DEV_OF_FINAL, PRE, FINAL or POST
    detail: tuple[int, ...] = ()  # orders versions of one release and stage (rc1 < rc2)

    @property
    def order(self) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
        return (self.release, self.stage, self.detail)

    @property
    def identity(self) -> tuple[object, ...]:
        """Equal for the same version however written (v1.4 and 1.4.0); SemVer's labels count."""
        return (*self.order, self.text.lower() if self.scheme == "SemVer" else "")

    @property
    def line(self) -> tuple[int, ...]:
        """The release line: the release numbers but the last (2.30.3 is on 2.30; 1.4.0 on 1)."""
        return self.release[:-1]


@lru_cache(maxsize=65536)
def tag_version(tag: str) -> TagVersion | None:
    """The version in a tag name, or None when it carries none."""
    plain = _PLAIN_TAG.fullmatch(tag)  # v1.2.3, deploy/production/42: most tags, read without packaging
    if plain is not None:
        text = plain[1]
        return TagVersion(text, "PEP 440", _release(int(part) for part in text.split(".")), False, FINAL)
    name = _BETWEEN_NUMBERS.sub(".", tag)
    for start in _START.finditer(name):
        before, rest = name[: start.start()], name[start.start() :]
        if _DATE_GOES_ON.search(before) and "." not in rest:
            continue  # the 01-15 of 2024-01-15: a date goes on, no version starts there
        found = _read(rest)
        if found is not None:
            return found
    return None


def _read(text: str) -> TagVersion | None:
    if _PLAIN.fullmatch(text):  # the common case, without packaging
        return TagVersion(text, "PEP 440", _release(int(part) for part in text.split(".")), False, FINAL)
    try:
        version = Version(text)
    except InvalidVersion:
        semver = _SEMVER.fullmatch(text)
        if semver is None:
            return None
        release = _release(int(part) for part in semver["release"].split("."))
        pre = semver["pre"] is not None
        return TagVersion(text, "SemVer", release, pre, PRE if pre else FINAL)
    if version.pre is not None:
        stage, detail = PRE, (_PHASES[version.pre[0]], version.pre[1], *_dev(version))
    elif version.post is not None:
        stage, detail = POST, (version.post, *_dev(version))
    elif version.dev is not None:
        stage, detail = DEV_OF_FINAL, (version.dev,)
    else:
        stage, detail = FINAL, ()
    return TagVersion(str(version), "PEP 440", _release(version.release), version.is_prerelease, stage, detail)


def _dev(version: Version) -> tuple[int, ...]:
    # A .devN of a pre- or post-release comes before it.
    return (0, version.dev) if version.dev is not None else (1, 0)


def _release(numbers: Iterable[int]) -> tuple[int, ...]:
    release = list(numbers)
    while release and release[-1] == 0:
        release.pop()
    return tuple(release)


def prerelease_reason(tag: str) -> str | None:
    """ "pre-release 2.0.0rc1 (PEP 440)" for a pre-release's tag, else None."""
    version = tag_version(tag)
    if version is None or not version.is_prerelease:
        return None
    return f"pre-release {version.text} ({version.scheme})"
