"""The object-store interface publishing talks to, and the local directory implementation.

Two implementations share it: S3 (orchestrator/s3store.py) and a directory on disk (below),
the local default when no bucket is configured. Both give the guarantees publishing relies
on: create-only writes (If-None-Match: *), compare-and-swap on an ETag (If-Match), and a
HEAD that reports size and sha256.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from orchestrator.archive import sha256_of
from orchestrator.errors import PublishError
from orchestrator.fsutil import write_atomic


@dataclass(frozen=True, kw_only=True)
class StoredObject:
    key: str
    size: int
    etag: str
    sha256: str | None  # hex, as recorded at upload (object metadata "sha256")
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectExists(PublishError):
    """A create-only write found the key already there."""


class PreconditionFailed(PublishError):
    """An If-Match write found a different ETag: someone else wrote first."""


class ObjectStore(Protocol):
    def describe(self, key: str = "") -> str:
        """Human-readable location, e.g. s3://bucket/key, for messages."""
        ...

    def public_url(self, key: str) -> str: ...

    def head(self, key: str) -> StoredObject | None: ...

    def get(self, key: str) -> tuple[bytes, str] | None:
        """(body, etag), or None when the key does not exist."""
        ...

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,
    ) -> StoredObject:
        """Write `source`. create_only: fail with ObjectExists if the key exists.
        if_match: fail with PreconditionFailed unless the current ETag equals it.
        cache_control: the Cache-Control header HTTP clients get (stores without HTTP
        ignore it)."""
        ...

    def verify(self, key: str, source: Path | bytes, *, sha256: str) -> StoredObject:
        """Read back what the store holds at `key`; PublishError unless it is `source`."""
        ...

    def delete(self, key: str, *, if_match: str) -> None:
        """Remove `key` if its ETag is still `if_match` (PreconditionFailed otherwise)."""
        ...

    def sweep_stale(self, prefix: str, *, older_than: float) -> list[str]:
        """Remove what an earlier publisher killed mid-write left behind (temp files, parts
        of multipart uploads) that is provably the farm's and older than `older_than`
        seconds; return what was removed."""
        ...


def sha256_hex(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return sha256_of(source)


class DirectoryStore:
    """Objects as files under `root`, with S3's conditional-write semantics.

    A lock file serialises check-and-write across processes on this machine; every write
    goes to a temp file and is renamed into place, so a reader never sees half an object.
    ETags are the sha256 of the content; per-object metadata sits in root/.farm-meta/.
    """

    def __init__(self, root: Path, *, public_base_url: str | None = None) -> None:
        self.root = root.resolve()
        self.public_base_url = public_base_url

    def describe(self, key: str = "") -> str:
        return f"{self.root}/{key}" if key else str(self.root)

    def public_url(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{quote(key)}"
        return (self.root / key).as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or key.startswith(".farm-meta"):
            raise PublishError(f"invalid key {key!r}")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / ".farm-meta" / f"{key}.json"

    def delete(self, key: str, *, if_match: str) -> None:
        path = self._path(key)
        with self._locked():
            current = self.head(key)
            if current is None:
                return
            if current.etag != if_match:
                raise PreconditionFailed(f"{self.describe(key)} changed since it was written")
            path.unlink()
            self._meta_path(key).unlink(missing_ok=True)

    def sweep_stale(self, prefix: str, *, older_than: float) -> list[str]:
        """write_atomic's temp files (`.NAME.tmp-XXXXXXXX`) a killed publisher left. A live
        writer keeps its temp file's mtime fresh, so age tells the two apart."""
        top = (self.root / prefix).resolve() if prefix else self.root
        if not top.is_relative_to(self.root) or not top.is_dir():
            return []
        cutoff = time.time() - older_than
        removed: list[str] = []
        for path in sorted(top.rglob(".*.tmp-*")):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(str(path.relative_to(self.root)))
        return removed

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".farm-lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _read_locked(self) -> Iterator[None]:
        """A shared lock for reads, taken through a read-only descriptor: a store on a
        read-only mount (or one the reader may not write) can still be read and checked.
        Without a lock file no writer has run here yet; writes are renames anyway."""
        try:
            fd = os.open(self.root / ".farm-lock", os.O_RDONLY)
        except FileNotFoundError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        meta_path = self._meta_path(key)
        if not path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_bytes().decode("utf-8"))
            meta["etag"]
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
            raise PublishError(
                f"{self.describe(key)}: its metadata {meta_path} is damaged ({exc})",
                hint="delete that metadata file and publish the cell again",
            ) from None
        return StoredObject(
            key=key,
            size=path.stat().st_size,
            etag=meta["etag"],
            sha256=meta.get("sha256"),
            metadata=meta.get("metadata", {}),
        )

    def get(self, key: str) -> tuple[bytes, str] | None:
        with self._read_locked():
            found = self.head(key)
            if found is None:
                return None
            return self._path(key).read_bytes(), found.etag

    def put(
        self,
        key: str,
        source: Path | bytes,
        *,
        sha256: str,
        content_type: str,
        if_match: str | None = None,
        create_only: bool = False,
        metadata: Mapping[str, str] | None = None,
        cache_control: str | None = None,  # file:// has no caching headers
    ) -> StoredObject:
        path = self._path(key)
        actual = sha256_hex(source)
        if actual != sha256:
            # Same promise S3 gives with a SHA-256 checksum: corrupt input is refused.
            raise PublishError(f"{self.describe(key)}: content sha256 {actual} != {sha256}")
        with self._locked():
            current = self.head(key)
            if create_only and current is not None:
                raise ObjectExists(f"{self.describe(key)} already exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{self.describe(key)} changed since it was read")
            write_atomic(path, source)
            record = {
                "etag": actual,
                "sha256": actual,
                "content_type": content_type,
                "metadata": dict(metadata or {}),
            }
            write_atomic(self._meta_path(key), json.dumps(record).encode())
        return StoredObject(
            key=key, size=path.stat().st_size, etag=actual, sha256=actual,
            metadata=dict(metadata or {}),
        )  # fmt: skip

    def verify(self, key: str, source: Path | bytes, *, sha256: str) -> StoredObject:
        found = self.head(key)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        if found is None:
            raise PublishError(f"read-back: {self.describe(key)} is missing after upload")
        stored_sha256 = sha256_hex(self._path(key))  # a real read-back of the bytes
        if found.size != size or stored_sha256 != sha256:
            raise PublishError(
                f"read-back: {self.describe(key)} holds {found.size} bytes sha256 "
                f"{stored_sha256}, expected {size} bytes sha256 {sha256}"
            )
        return found
