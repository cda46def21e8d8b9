"""Fetch CPython source tarballs into a local cache, trusting only the sha256 pin.

Mirrors are tried in the order matrix.yaml lists them. Whatever a mirror serves is hashed while
it streams into a temporary file next to the cache entry; only a file whose sha256 equals the pin
is renamed into place, so the cache never holds a wrong or half-written tarball. Reading stops
as soon as a mirror sends more than the pinned size (UNPINNED_SIZE_CAP when no size is pinned)
or takes longer than the download deadline; the next mirror is then tried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from orchestrator.errors import FileRefused, SignatureError, SourceError
from orchestrator.fsutil import check_regular, fsync_dir, open_regular
from orchestrator.matrix import PythonSource
from orchestrator.matrix.schema import DEFAULT_DOWNLOAD_DEADLINE_SECONDS
from orchestrator.sources.http import (
    CHUNK_SIZE,
    DeadlineExceeded,
    TooLarge,
    TransferFailed,
    stream_url,
)
from orchestrator.sources.signatures import SignaturePolicy, SourceProof, prove_source

# Transient failures get a few quick retries on the same mirror; the budget stops a mirror that
# times out slowly from being retried at all (the next mirror is a better bet).
RETRY_ATTEMPTS = 3
RETRY_BUDGET_SECONDS = 5.0
RETRY_WAIT = wait_exponential(multiplier=0.25, min=0.25, max=2.0)

# With no size pinned, no tarball may be larger than this: CPython's are ~20-30 MB.
UNPINNED_SIZE_CAP = 256 * 1024 * 1024

Progress = Callable[[str], None]


def size_limit(python: PythonSource) -> int:
    """The most bytes a download of `python`'s tarball may have."""
    return python.size if python.size is not None else UNPINNED_SIZE_CAP


def _too_large(python: PythonSource, url: str, exc: TooLarge) -> str:
    """One line naming the mirror and the sizes."""
    if python.size is not None:
        what = f"the pinned size of {python.size} bytes"
    else:
        what = f"the {UNPINNED_SIZE_CAP} byte cap for a tarball with no pinned size"
    if exc.announced is not None:
        return f"{url}: announces {exc.announced} bytes, more than {what}; not read"
    return f"{url}: sent more than {what}; stopped reading after {exc.received} bytes"


@dataclass(frozen=True, kw_only=True)
class FetchedSource:
    path: Path
    sha256: str
    size: int
    url: str | None  # None: reused from the cache, no network
    proof: SourceProof  # what was verified: the sha256 pin, and upstream's signatures


class SourceChecksumError(SourceError):
    """A file's sha256 differs from the pin."""

    def __init__(self, path: Path, *, actual: str, expected: str) -> None:
        super().__init__(f"{path}: sha256 is {actual}, expected {expected}")
        self.path = path
        self.actual = actual
        self.expected = expected


def mirror_urls(python: PythonSource, mirrors: Sequence[str]) -> list[str]:
    """The mirror templates filled in for `python`, in the same order."""
    values = {
        "version": python.version,
        "filename": python.tarball,
        "major_minor": python.major_minor,
        "ext": python.extension,
    }
    urls: list[str] = []
    for template in mirrors:
        try:
            urls.append(template.format_map(values))
        except (KeyError, ValueError, IndexError) as exc:
            raise SourceError(
                f"bad mirror template {template!r}: {exc}",
                hint="placeholders allowed: {version} {filename} {major_minor} {ext}",
            ) from None
    return urls


def _hash_file(path: Path, limit: int | None) -> str:
    digest = hashlib.sha256()
    with open_regular(path, limit=limit) as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str, *, limit: int | None = None) -> str:
    """Hash `path` (a regular file of at most `limit` bytes) in chunks; return the digest, or
    raise SourceChecksumError if it differs."""
    expected = expected_sha256.lower()
    try:
        actual = _hash_file(path, limit)
    except FileRefused as exc:
        raise SourceError(f"cannot read {exc}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    if actual != expected:
        raise SourceChecksumError(path, actual=actual, expected=expected)
    return actual


# --- one mirror ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Mismatch:
    actual: str
    size: int


def _download(
    url: str,
    *,
    final: Path,
    expected: str,
    expected_size: int | None,
    timeout: float,
    deadline: float,
) -> int | _Mismatch:
    """One attempt: stream `url` next to `final`; rename into place only if the hash (and the
    pinned size) match.

    Returns the size on success, a _Mismatch when the mirror served other bytes. A mirror
    sending too much or too slowly raises TransferFailed; the .part file is removed.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.part-")
    except OSError as exc:
        raise SourceError(f"cannot write in {final.parent}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            limit = expected_size if expected_size is not None else UNPINNED_SIZE_CAP
            actual, size = stream_url(
                url, out, timeout=timeout, dest=tmp, limit=limit, deadline=deadline
            )
            if actual != expected or (expected_size is not None and size != expected_size):
                tmp.unlink(missing_ok=True)
                return _Mismatch(actual=actual, size=size)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cached tarball is not a secret
        os.replace(tmp, final)
    except BaseException as exc:
        # Includes KeyboardInterrupt: never leave a .part file behind.
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            # stream_url turns network OSErrors into TransferFailed; this one is the local disk.
            raise SourceError(f"cannot write {final}: {exc.strerror or exc}") from None
        raise
    fsync_dir(final.parent)
    return size


def _download_with_retries(
    url: str,
    *,
    final: Path,
    expected: str,
    expected_size: int | None,
    timeout: float,
    deadline: float,
    progress: Progress,
) -> int | _Mismatch:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, TransferFailed) else "error"
        wait = state.next_action.sleep if state.next_action else 0.0
        progress(
            f"{url}: {reason}; retrying in {wait:.2g}s "
            f"(attempt {state.attempt_number + 1} of {RETRY_ATTEMPTS})"
        )

    retrying = Retrying(
        stop=stop_after_attempt(RETRY_ATTEMPTS) | stop_after_delay(RETRY_BUDGET_SECONDS),
        wait=RETRY_WAIT,
        retry=retry_if_exception(lambda exc: isinstance(exc, TransferFailed) and exc.retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    result: int | _Mismatch = retrying(
        _download,
        url,
        final=final,
        expected=expected,
        expected_size=expected_size,
        timeout=timeout,
        deadline=deadline,
    )
    return result


# --- all mirrors -----------------------------------------------------------------------------


def _reuse_cached(
    final: Path, expected: str, limit: int, pinned_size: int | None, progress: Progress
) -> FetchedSource | None:
    try:
        # Hashing a fifo blocks and /dev/zero never ends: only a regular file is read.
        info = check_regular(final)
    except FileRefused as exc:
        if exc.missing:  # a dangling symlink counts as absent; os.replace overwrites it
            return None
        raise SourceError(
            f"{exc} (expected the source tarball)",
            hint="remove it; the tarball will be fetched again",
        ) from None
    if info.st_size > limit or (pinned_size is not None and info.st_size != pinned_size):
        want = f"the pinned {pinned_size}" if pinned_size is not None else f"at most {limit}"
        progress(f"cached {final} has {info.st_size} bytes, expected {want}; fetching again")
        final.unlink(missing_ok=True)
        return None
    try:
        digest = verify_file(final, expected, limit=limit)
    except SourceChecksumError as exc:
        # A truncated earlier copy or a wrong file dropped in by hand: the pin wins.
        progress(f"cached {final} has sha256 {exc.actual}, expected {expected}; fetching again")
        final.unlink(missing_ok=True)
        return None
    size = final.stat().st_size
    progress(f"reusing cached {final} (sha256 verified)")
    return FetchedSource(
        path=final, sha256=digest, size=size, url=None, proof=SourceProof(sha256=digest)
    )


def fetch_source(
    python: PythonSource,
    *,
    mirrors: Sequence[str],
    cache_dir: Path,
    progress: Progress | None = None,
    timeout: float = 30.0,
    deadline: float = DEFAULT_DOWNLOAD_DEADLINE_SECONDS,
    signatures: SignaturePolicy | None = None,
) -> FetchedSource:
    """Return `python`'s tarball in `cache_dir`, verified against its sha256 pin and, with a
    `signatures` policy, against upstream's signatures (see orchestrator.sources.signatures).

    A verified cached copy is reused without touching the network; otherwise each mirror is
    tried in order until one serves bytes with the pinned hash and size; a mirror is given up
    after `deadline` seconds for one download (`timeout` bounds each read). Raises SourceError
    naming the reason per mirror when none does, SignatureError when a signature is bad (the
    tarball is then removed from the cache: nothing unproven is kept).
    """
    fetched = _fetch_pinned(
        python,
        mirrors=mirrors,
        cache_dir=cache_dir,
        progress=progress,
        timeout=timeout,
        deadline=deadline,
    )
    if signatures is None:
        return fetched
    try:
        proof = prove_source(
            fetched.path,
            sha256=fetched.sha256,
            tarball_urls=mirror_urls(python, mirrors),
            cache_dir=cache_dir,
            policy=signatures,
            progress=progress or (lambda _line: None),
        )
    except SignatureError:
        fetched.path.unlink(missing_ok=True)
        raise
    return dataclasses.replace(fetched, proof=proof)


def _fetch_pinned(
    python: PythonSource,
    *,
    mirrors: Sequence[str],
    cache_dir: Path,
    progress: Progress | None,
    timeout: float,
    deadline: float,
) -> FetchedSource:
    report: Progress = progress or (lambda _line: None)
    expected = python.sha256.lower()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"cannot create cache dir {cache_dir}: {exc.strerror or exc}") from None
    final = cache_dir / python.tarball
    # The schema allows only upstream's plain names; this is the second line of defence, as
    # a mismatch deletes `final`.
    if Path(python.tarball).name != python.tarball or final.parent != cache_dir:
        raise SourceError(
            f"tarball name {python.tarball!r} is not a plain file name",
            hint="fix pythons[].filename in matrix.yaml",
        )

    cached = _reuse_cached(final, expected, size_limit(python), python.size, report)
    if cached is not None:
        return cached

    failures: list[str] = []
    mismatches = oversized = 0
    for url in mirror_urls(python, mirrors):
        report(f"fetching {url}")
        try:
            outcome = _download_with_retries(
                url,
                final=final,
                expected=expected,
                expected_size=python.size,
                timeout=timeout,
                deadline=deadline,
                progress=report,
            )
        except TooLarge as exc:
            oversized += 1
            line = _too_large(python, url, exc)
            report(f"{line} (discarded)")
            failures.append(line)
            continue
        except DeadlineExceeded as exc:
            line = (
                f"{url}: still sending after the {exc.deadline:g}s download deadline "
                f"(sources.download_deadline_seconds); stopped after {exc.received} bytes"
            )
            report(f"{line} (discarded)")
            failures.append(line)
            continue
        except TransferFailed as exc:
            report(f"{url}: {exc.reason}")
            failures.append(f"{url}: {exc.reason}")
            continue
        if isinstance(outcome, _Mismatch):
            mismatches += 1
            if outcome.actual != expected:
                line = f"sha256 mismatch at {url}: got {outcome.actual}, expected {expected}"
            else:
                line = f"size mismatch at {url}: got {outcome.size} bytes, pinned {python.size}"
            report(f"{line} ({outcome.size} bytes, discarded)")
            failures.append(line)
            continue
        report(f"verified sha256 {expected} of {python.tarball} ({outcome} bytes)")
        return FetchedSource(
            path=final, sha256=expected, size=outcome, url=url, proof=SourceProof(sha256=expected)
        )

    raise _all_failed(python, failures, mismatches, oversized, final)


def _all_failed(
    python: PythonSource, failures: list[str], mismatches: int, oversized: int, final: Path
) -> SourceError:
    if not failures:
        return SourceError(
            f"could not fetch {python.tarball} for {python.version}: no mirrors configured",
            hint=f"add one to sources.mirrors in matrix.yaml, or put the tarball at {final}",
        )
    what = f"could not fetch {python.tarball} for {python.version}"
    hint = f"add a mirror to sources.mirrors in matrix.yaml, or put the verified tarball at {final}"
    if mismatches:
        # Loud on purpose: either the pin in matrix.yaml is wrong or a mirror serves other bytes.
        what += f" (SHA256 MISMATCH from {mismatches} mirror(s); nothing was cached)"
        hint = (
            f"check the sha256 pinned for {python.version} in matrix.yaml against python.org; "
            "if the pin is right, a mirror is serving a different (possibly tampered) file. " + hint
        )
    elif oversized:
        what += f" ({oversized} mirror(s) sent more than the pinned size; nothing was cached)"
        hint = (
            f"check the size pinned for {python.version} in matrix.yaml against upstream's; "
            "if it is right, a mirror is serving a different file. " + hint
        )
    return SourceError(f"{what}: " + "; ".join(failures), hint=hint)
