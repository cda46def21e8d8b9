"""What the release feeds know against what matrix.yaml pins: one row per CPython minor.

read_feeds -> FeedReport per feed (releases, or why it could not be reached)
merge      -> ReleaseIndex (feeds that disagree on a tarball's sha256 stop everything)
minor_rows -> MinorRow per minor with its status
plan_update-> the pins `versions --update` adds (and, with drop_old, removes)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from packaging.version import Version

from orchestrator.errors import ConfigError, FeedError
from orchestrator.matrix import PythonSource
from orchestrator.sources.feeds import FeedUnavailable, Release, ReleaseFeed

OLDEST_MINOR = Version("3.9")
Progress = Callable[[str], None]


class Status(enum.StrEnum):
    CURRENT = "current"  # the matrix pins the newest published patch
    STALE = "stale"  # a newer patch is published
    NEW_MINOR = "new minor"  # published, with a final release, and not in the matrix
    PRERELEASE = "prerelease"  # only prereleases published, and not in the matrix
    END_OF_LIFE = "end of life"  # upstream no longer supports it
    UNKNOWN = "not in feeds"  # pinned, but no feed that answered lists it


@dataclass(frozen=True, kw_only=True)
class FeedReport:
    name: str
    source: str
    releases: tuple[Release, ...] = ()
    unavailable: str | None = None


def read_feeds(feeds: Sequence[ReleaseFeed], progress: Progress) -> list[FeedReport]:
    """Read every feed in order. Unreachable ones are reported and skipped; FeedError from a
    malformed one propagates; when none answers, that is a FeedError too."""
    reports: list[FeedReport] = []
    for feed in feeds:
        progress(f"reading {feed.name}: {feed.describe()}")
        try:
            releases = feed.releases()
        except FeedUnavailable as exc:
            progress(f"{feed.name}: unavailable ({exc.reason}); using the other feeds")
            reports.append(
                FeedReport(name=feed.name, source=feed.describe(), unavailable=exc.reason)
            )
            continue
        progress(f"{feed.name}: {len(releases)} release(s)")
        reports.append(FeedReport(name=feed.name, source=feed.describe(), releases=tuple(releases)))
    if not feeds:
        raise ConfigError(
            "no release feeds configured",
            hint="add sources.release_feeds to matrix.yaml (see docs/RELEASES.md)",
        )
    if all(report.unavailable for report in reports):
        reasons = "; ".join(f"{r.name}: {r.unavailable}" for r in reports)
        raise FeedError(f"no release feed could be read ({reasons})", hint="check the network")
    return reports


@dataclass(frozen=True, kw_only=True)
class ReleaseIndex:
    """Every release the feeds stated, by version; within a version, in feed order."""

    by_version: dict[str, list[Release]] = field(default_factory=dict)

    def versions(self) -> list[Version]:
        return sorted(Version(v) for v in self.by_version)

    def best(self, version: str) -> Release:
        """The release to pin: upstream's .tar.xz if any feed lists it, from the first feed."""
        releases = self.by_version[version]
        return next((r for r in releases if r.filename.endswith(".tar.xz")), releases[0])

    def find(self, version: str, filename: str) -> Release | None:
        return next((r for r in self.by_version.get(version, []) if r.filename == filename), None)


def merge(reports: Iterable[FeedReport]) -> ReleaseIndex:
    """One index of all releases. Two feeds stating different hashes (or sizes) for one file
    stop here. A size only a later feed states is kept, beside the first feed's hash."""
    index = ReleaseIndex()
    for report in reports:
        for release in report.releases:
            known = index.find(release.version, release.filename)
            if known is None:
                index.by_version.setdefault(release.version, []).append(release)
                continue
            for what, mine, theirs in (
                ("sha256", known.sha256, release.sha256),
                ("size", known.size, release.size),
            ):
                if mine is not None and theirs is not None and mine != theirs:
                    raise FeedError(
                        f"feeds disagree on {release.filename}'s {what}: {known.feed} says "
                        f"{mine} ({known.origin}), {release.feed} says {theirs} "
                        f"({release.origin})",
                        hint="one of them is wrong or tampered with; nothing was changed. Check "
                        "upstream's signature before trusting either",
                    )
            if known.size is None and release.size is not None:
                releases = index.by_version[release.version]
                releases[releases.index(known)] = dataclasses.replace(known, size=release.size)
    return index


def pin_conflicts(pythons: Iterable[PythonSource], index: ReleaseIndex) -> list[str]:
    """Pins whose sha256 (or size) differs from what a feed publishes for the same file."""
    problems: list[str] = []
    for python in pythons:
        release = index.find(python.version, python.tarball)
        if release is None:
            continue
        if release.sha256 != python.sha256:
            problems.append(
                f"matrix.yaml pins {python.tarball} as {python.sha256}, but {release.feed} "
                f"publishes {release.sha256} ({release.origin})"
            )
        elif None not in (python.size, release.size) and python.size != release.size:
            problems.append(
                f"matrix.yaml pins {python.tarball} as {python.size} bytes, but {release.feed} "
                f"publishes {release.size} ({release.origin})"
            )
    return problems


@dataclass(frozen=True, kw_only=True)
class MinorRow:
    minor: str
    pinned: tuple[str, ...]
    newest: str | None  # the newest published patch (a prerelease only if no final exists)
    newest_release: Release | None  # its tarball as the first feed that lists it states it
    status: Status
    end_of_life: dt.date | None

    @property
    def feed(self) -> str | None:
        return self.newest_release.feed if self.newest_release else None

    def as_json(self) -> dict[str, object]:
        return {
            "minor": self.minor,
            "pinned": list(self.pinned),
            "newest": self.newest,
            "newest_filename": self.newest_release.filename if self.newest_release else None,
            "newest_sha256": self.newest_release.sha256 if self.newest_release else None,
            "newest_size": self.newest_release.size if self.newest_release else None,
            "feed": self.feed,
            "status": self.status.value,
            "end_of_life": self.end_of_life.isoformat() if self.end_of_life else None,
        }


def _minor(version: Version) -> str:
    return f"{version.major}.{version.minor}"


def newest_published(index: ReleaseIndex, minor: str) -> Version | None:
    """The newest final release of `minor`, or its newest prerelease when none is final."""
    published = [v for v in index.versions() if _minor(v) == minor]
    finals = [v for v in published if not v.is_prerelease]
    return max(finals or published, default=None)


def minor_rows(
    pythons: Sequence[PythonSource],
    index: ReleaseIndex,
    *,
    end_of_life: dict[str, dt.date],
    today: dt.date,
) -> list[MinorRow]:
    pinned: dict[str, list[Version]] = {}
    for python in pythons:
        pinned.setdefault(python.major_minor, []).append(python.parsed)
    minors = {_minor(v) for v in index.versions() if Version(_minor(v)) >= OLDEST_MINOR}
    minors |= set(pinned)
    rows: list[MinorRow] = []
    for minor in sorted(minors, key=Version):
        newest = newest_published(index, minor)
        pins = sorted(pinned.get(minor, []))
        eol = end_of_life.get(minor)
        if eol is not None and eol <= today:
            status = Status.END_OF_LIFE
        elif newest is None:
            status = Status.UNKNOWN
        elif not pins:
            status = Status.PRERELEASE if newest.is_prerelease else Status.NEW_MINOR
        elif pins[-1] >= newest:
            status = Status.CURRENT
        else:
            status = Status.STALE
        rows.append(
            MinorRow(
                minor=minor,
                pinned=tuple(str(v) for v in pins),
                newest=str(newest) if newest else None,
                newest_release=index.best(str(newest)) if newest else None,
                status=status,
                end_of_life=eol,
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class UpdatePlan:
    add: tuple[Release, ...]
    drop: tuple[str, ...]  # versions whose pins are removed (--drop-old)

    @property
    def empty(self) -> bool:
        return not self.add and not self.drop


def plan_update(
    pythons: Sequence[PythonSource],
    index: ReleaseIndex,
    rows: Sequence[MinorRow],
    *,
    minors: Sequence[str] = (),
    drop_old: bool = False,
) -> UpdatePlan:
    """Pins to add: the newest published patch of each tracked minor that is not end of life
    (or of each minor named in `minors`, which may be new). Existing pins never change."""
    by_minor = {row.minor: row for row in rows}
    if minors:
        for minor in minors:
            row = by_minor.get(minor)
            if row is None or row.newest is None:
                raise ConfigError(
                    f"no release feed that answered lists CPython {minor}",
                    hint="`orchestrator versions` shows what the feeds know",
                )
            if row.status is Status.END_OF_LIFE:
                raise ConfigError(
                    f"CPython {minor} reached its end of life on {row.end_of_life}; not adding it"
                )
        chosen = [by_minor[m] for m in minors]
    else:
        chosen = [r for r in rows if r.status is Status.STALE]
    pinned = {python.version for python in pythons}
    add: list[Release] = []
    drop: list[str] = []
    for row in chosen:
        assert row.newest is not None
        if row.newest not in pinned:
            add.append(index.best(row.newest))
        if drop_old:
            drop.extend(v for v in row.pinned if v != row.newest)
    return UpdatePlan(add=tuple(add), drop=tuple(drop))
