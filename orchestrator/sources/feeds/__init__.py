"""Release feeds: where the farm learns that CPython released something, and its tarball's hash.

A feed is anything with a `name` and a `releases()` method returning Release values: each
names a version, upstream's tarball file name, that file's sha256 (and size, when the feed
publishes one) as the feed publishes it,
where the feed said so, and where a signature can be found. Feeds are configured in
matrix.yaml (`sources.release_feeds`) and read in that order; docs/RELEASES.md shows how to
add one.

A feed that cannot be reached raises FeedUnavailable (the others are still used); one that
answers with something malformed raises FeedError (nothing is decided from bad data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from packaging.version import Version

from orchestrator.errors import FeedError
from orchestrator.sources.http import TransferFailed

SignatureKind = Literal["openpgp", "sigstore"]

# Upstream's own version spelling: 3.13.18, 3.15.0rc1, 3.14.0a7.
UPSTREAM_VERSION = re.compile(r"(?P<minor>\d+\.\d+)\.\d+(?:(?:a|b|rc)\d+)?")
# Upstream's source tarball names: Python-3.13.5.tar.xz, Python-3.11.2.tgz.
TARBALL_NAME = re.compile(r"Python-(?P<version>[0-9][0-9a-z.]*?)\.(?P<ext>tar\.xz|tgz)")
SHA256 = re.compile(r"[0-9a-f]{64}")
# What matrix.yaml accepts as a pinned size (orchestrator.matrix.schema.MAX_TARBALL_BYTES).
MAX_SIZE = 1024**3


def transfer_failure(feed: str, url: str, exc: TransferFailed) -> FeedUnavailable | FeedError:
    """A feed that cannot be reached is skipped (FeedUnavailable); one whose answer was cut
    short is an error (FeedError): half a feed would silently hide releases."""
    if exc.truncated:
        return FeedError(
            f"release feed {feed}: {url} was cut short ({exc.reason})",
            hint="run again; nothing was changed",
        )
    return FeedUnavailable(feed, f"{url}: {exc.reason}")


class FeedUnavailable(Exception):
    """The feed could not be reached (network, HTTP status); other feeds may still answer."""

    def __init__(self, feed: str, reason: str) -> None:
        super().__init__(f"{feed}: {reason}")
        self.feed = feed
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class Release:
    """One published source tarball of one CPython version, as one feed states it.

    Built from outside data, so it checks its own shape: a version, file name or hash
    that is not upstream's raises FeedError naming the feed.
    """

    version: str
    filename: str
    sha256: str
    feed: str
    origin: str  # what in the feed said so, for the provenance comment and error messages
    size: int | None = None  # bytes; None when the feed does not say
    url: str | None = None
    signature_url: str | None = None
    signature_kind: SignatureKind | None = None

    def __post_init__(self) -> None:
        where = f"release feed {self.feed} ({self.origin})"
        if not UPSTREAM_VERSION.fullmatch(self.version):
            raise FeedError(f"{where}: {self.version!r} is not a CPython version")
        match = TARBALL_NAME.fullmatch(self.filename)
        if match is None or match["version"] != self.version:
            raise FeedError(f"{where}: {self.filename!r} is not the tarball of {self.version}")
        if not SHA256.fullmatch(self.sha256):
            raise FeedError(f"{where}: {self.filename}: {self.sha256!r} is not a sha256")
        if self.size is not None and not (type(self.size) is int and 0 < self.size <= MAX_SIZE):
            raise FeedError(f"{where}: {self.filename}: {self.size!r} is not a tarball size")

    @property
    def parsed(self) -> Version:
        return Version(self.version)

    @property
    def minor(self) -> str:
        parsed = self.parsed
        return f"{parsed.major}.{parsed.minor}"


class ReleaseFeed(Protocol):
    """What `versions` and `versions --update` read releases from."""

    @property
    def name(self) -> str: ...

    def describe(self) -> str:
        """Where the feed reads from, for messages."""
        ...

    def releases(self) -> list[Release]:
        """Every source tarball release the feed knows. FeedUnavailable / FeedError."""
        ...
