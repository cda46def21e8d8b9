"""The `debian-sources` feed: a Debian suite's source index, dists/SUITE/main/source/Sources.xz.

Debian's python3.X source packages carry upstream's tarball unmodified as
`python3.X_VERSION.orig.tar.xz` (or `.orig.tar.gz` for a `.tgz`), and the index lists its
sha256 under Checksums-Sha256, with the `.asc` beside it when upstream signed it. With a
`keyring`, the suite's InRelease must verify with Debian's archive keys and Sources.xz must
have the sha256 InRelease lists for it, as apt requires, so the hashes are proven by Debian's
signature and not just by plain http.
"""

from __future__ import annotations

import lzma
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from debian.deb822 import Sources

from orchestrator.errors import FeedError, FileRefused, SignatureError, SourceError
from orchestrator.fsutil import check_regular
from orchestrator.matrix.schema import DebianSourcesFeedSettings
from orchestrator.sources.feeds import Release, transfer_failure
from orchestrator.sources.http import TransferFailed, read_url, stream_url
from orchestrator.sources.signatures.openpgp import verify_clearsigned

PACKAGE = re.compile(r"Package: python3\.\d+")
# Debian spells upstream's 3.15.0rc1 as 3.15.0~rc1; a +dfsg/+repack suffix means a repacked
# tarball, which is not upstream's and is skipped.
DEBIAN_UPSTREAM = re.compile(r"(?P<release>\d+\.\d+\.\d+)(?:~(?P<pre>(?:a|b|rc)\d+))?")
INRELEASE_LIMIT = 4 * 1024 * 1024
KEYRING_LIMIT = 16 * 1024 * 1024  # debian-archive-keyring.gpg is ~100 KB
INDEX_LIMIT = 256 * 1024 * 1024  # sid's Sources.xz is ~11 MB
# Decompressed, sid's index is ~70 MB of text: an xz bomb stops here, not in memory or after
# minutes of decompression; a "line" longer than any field Debian writes is not an index.
INDEX_TEXT_LIMIT = 1024 * 1024 * 1024
LINE_LIMIT = 1024 * 1024
TIMEOUT = 60.0
DEADLINE = 600.0  # for the whole index, however slowly it arrives


class DebianSourcesFeed:
    def __init__(self, settings: DebianSourcesFeedSettings, *, root: Path) -> None:
        self.settings = settings
        self.archive = settings.archive.rstrip("/")
        self.keyring = root / settings.keyring if settings.keyring else None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def index_path(self) -> str:
        return f"{self.settings.component}/source/Sources.xz"

    @property
    def index_url(self) -> str:
        return f"{self.archive}/dists/{self.settings.suite}/{self.index_path}"

    def describe(self) -> str:
        proof = f", signed per {self.keyring}" if self.keyring else ", unauthenticated"
        return f"{self.index_url}{proof}"

    def releases(self) -> list[Release]:
        with tempfile.TemporaryDirectory(prefix="farm-feed-") as tmp:
            expected = self._listed_sha256(Path(tmp)) if self.keyring else None
            index = Path(tmp) / "Sources.xz"
            with index.open("wb") as out:
                try:
                    actual, _size = stream_url(
                        self.index_url,
                        out,
                        timeout=TIMEOUT,
                        dest=index,
                        limit=INDEX_LIMIT,
                        deadline=DEADLINE,
                    )
                except TransferFailed as exc:
                    raise transfer_failure(self.name, self.index_url, exc) from None
            if expected is not None and actual != expected:
                raise FeedError(
                    f"release feed {self.name}: {self.index_url} has sha256 {actual}, but the "
                    f"signed InRelease lists {expected}",
                    hint="a mirror or proxy altered the index, or it changed mid-download; "
                    "run again",
                )
            try:
                with lzma.open(index, "rb") as raw:
                    return list(self._parse(self._lines(raw)))
            except (lzma.LZMAError, EOFError, UnicodeDecodeError) as exc:
                raise FeedError(
                    f"release feed {self.name}: {self.index_url} is not a readable xz index ({exc})"
                ) from None

    def _listed_sha256(self, tmp: Path) -> str:
        """Sources.xz's sha256 from the suite's InRelease, after its signature verified."""
        assert self.keyring is not None
        url = f"{self.archive}/dists/{self.settings.suite}/InRelease"
        try:
            body = read_url(url, timeout=TIMEOUT, limit=INRELEASE_LIMIT)
        except TransferFailed as exc:
            raise transfer_failure(self.name, url, exc) from None
        signed = tmp / "InRelease"
        signed.write_bytes(body)
        try:
            check_regular(self.keyring, limit=KEYRING_LIMIT)  # gpgv reads it: never a fifo
        except FileRefused as exc:
            raise SourceError(
                f"release feed {self.name}: keyring {exc.path}: "
                + ("does not exist" if exc.missing else exc.reason),
                hint="install debian-archive-keyring (`make setup` does), or fix the path",
            ) from None
        try:
            content = verify_clearsigned(signed, keyring=self.keyring, what=url)
        except SignatureError as exc:
            raise FeedError(f"release feed {self.name}: {exc}") from None
        in_sha256 = False
        for line in content.decode("utf-8", errors="replace").splitlines():
            if not line.startswith(" "):
                in_sha256 = line.strip() == "SHA256:"
                continue
            parts = line.split()
            if in_sha256 and len(parts) == 3 and parts[2] == self.index_path:
                return parts[0]
        raise FeedError(f"release feed {self.name}: {url} lists no sha256 for {self.index_path}")

    def _lines(self, raw: lzma.LZMAFile) -> Iterator[str]:
        """The decompressed index line by line, within INDEX_TEXT_LIMIT and LINE_LIMIT."""
        total = 0
        while line := raw.readline(LINE_LIMIT + 1):
            total += len(line)
            if total > INDEX_TEXT_LIMIT:
                raise FeedError(
                    f"release feed {self.name}: {self.index_url} decompresses to more than "
                    f"{INDEX_TEXT_LIMIT // 2**20} MiB; it is not a Sources index"
                )
            if len(line) > LINE_LIMIT:
                raise FeedError(
                    f"release feed {self.name}: {self.index_url} has a line over "
                    f"{LINE_LIMIT // 2**20} MiB; it is not a Sources index"
                )
            yield line.decode("utf-8")

    def _paragraphs(self, text: Iterable[str]) -> Iterator[str]:
        """The stanzas of python3.X source packages, streamed (the index is ~70 MB of text)."""
        lines: list[str] = []
        keep = False
        for line in text:
            if line.strip() == "":
                if keep and lines:
                    yield "".join(lines)
                lines, keep = [], False
                continue
            if not lines:
                keep = bool(PACKAGE.fullmatch(line.rstrip("\n")))
            if keep:
                lines.append(line)
        if keep and lines:
            yield "".join(lines)

    def _parse(self, text: Iterable[str]) -> Iterator[Release]:
        for paragraph in self._paragraphs(text):
            stanza = Sources(paragraph)
            package, debian_version = stanza.get("Package", ""), stanza.get("Version", "")
            directory = stanza.get("Directory", "")
            origin = f"{package} {debian_version} in {self.index_url}"
            if not debian_version or not directory:
                raise FeedError(
                    f"release feed {self.name}: {origin}: stanza without Version or Directory"
                )
            upstream = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
            match = DEBIAN_UPSTREAM.fullmatch(upstream)
            if match is None:
                continue  # a repacked tarball (+dfsg) or an unusual version: not upstream's file
            version = match["release"] + (match["pre"] or "")
            files = {entry["name"]: entry for entry in stanza.get("Checksums-Sha256", [])}
            for ext, upstream_ext in (("tar.xz", "tar.xz"), ("tar.gz", "tgz")):
                orig = f"{package}_{upstream}.orig.{ext}"
                if orig not in files:
                    continue
                signature = f"{orig}.asc"
                yield Release(
                    version=version,
                    filename=f"Python-{version}.{upstream_ext}",
                    sha256=files[orig]["sha256"],
                    size=_size(files[orig].get("size"), f"release feed {self.name}: {origin}"),
                    feed=self.name,
                    origin=origin,
                    url=f"{self.archive}/{directory}/{orig}",
                    signature_url=f"{self.archive}/{directory}/{signature}"
                    if signature in files
                    else None,
                    signature_kind="openpgp" if signature in files else None,
                )
                break
            else:
                raise FeedError(
                    f"release feed {self.name}: {origin}: no .orig.tar.xz or .orig.tar.gz listed"
                )


def _size(value: str | None, where: str) -> int:
    """Checksums-Sha256 lists `sha256 size name`; the size is a decimal byte count."""
    if value is None or not value.isdigit():
        raise FeedError(f"{where}: {value!r} is not a file size")
    return int(value)
