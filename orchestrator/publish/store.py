"""The object-store interface publishing talks to, and the local directory implementation.

Two implementations share it: S3 (orchestrator/publish/s3store.py) and a directory on disk
(below), the local default when no bucket is configured. Both give the guarantees publishing
relies on: create-only writes (If-None-Match: *), compare-and-swap on an ETag (If-Match), and
a HEAD that reports size and sha256.

What is published (the objects' bytes) is the truth. Each store also keeps a record per
object, derived from its bytes when it was written: the local store a file in
`.farm-meta/`, S3 the object's `sha256` metadata. A record that is missing, damaged or
describes other bytes is never taken for "no object": the operation stops with one line
naming what is missing (StoreRecordsError, nothing written) and `orchestrator
check-manifest --repair` rebuilds the records from the published bytes (publish/repair.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from orchestrator.archive import sha256_of
from orchestrator.errors import OutputError, PublishError
from orchestrator.fsutil import walk_tree, write_atomic

# The largest JSON document (manifest.json, download-metadata.json, a lease) a store hands
# out. A manifest entry is about 1 KB and the whole matrix a few hundred entries, so this is
# room for ~16 000 runtimes while json.loads of it stays far below 512 MB of memory.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
REPAIR_COMMAND = "orchestrator check-manifest --repair"
RECORDS_HINT = (
    f"nothing was changed; run `{REPAIR_COMMAND}` (same store options) to rebuild the "
    "records from what is published"
)
META_DIR = ".farm-meta"
LOCK_FILE = ".farm-lock"
RUN_LOCK_FILE = ".farm-run-lock"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_RECORD_BYTES = 64 * 1024


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


class StoreRecordsError(PublishError):
    """An object is there but the store's record of it is missing, damaged or describes other
    bytes (or the record area itself is unusable); nothing was written."""


class DocumentTooLarge(PublishError):
    """A JSON document in the store is over MAX_DOCUMENT_BYTES; it was not read."""


class StoreBusy(PublishError):
    """Another run holds the store (`nightly` takes it for its whole run)."""


# What a rebuilt record is for: (size, sha256 of the bytes) -> None to accept, or the reason
# the bytes are not what is published (then no record is written).
Judge = Callable[[int, str], str | None]


class ObjectStore(Protocol):
    def describe(self, key: str = "") -> str:
        """Human-readable location, e.g. s3://bucket/key, for messages."""
        ...

    def public_url(self, key: str) -> str: ...

    def head(self, key: str) -> StoredObject | None:
        """None when the key does not exist; StoreRecordsError when it exists without a record
        that describes it."""
        ...

    def get(self, key: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[bytes, str] | None:
        """(body, etag), or None when the key does not exist. DocumentTooLarge past
        `max_bytes` (nothing more is read); StoreRecordsError unless the record describes the
        body."""
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

    def run_lock(
        self, holder: str, *, prefix: str, on_lost: Callable[[str], None]
    ) -> AbstractContextManager[None]:
        """Hold the store (its `prefix`) for a whole run, or StoreBusy at once if another run
        holds it. `on_lost` is called if the hold is lost while running (S3 leases)."""
        ...

    # --- repair (publish/repair.py): rebuild records from the published bytes ----------

    def maintenance(self) -> AbstractContextManager[None]:
        """Keep publishers of this store out while records are rebuilt (where the store can)."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every object key under `prefix` (the farm's temp files and lock files excluded)."""
        ...

    def record_problem(self, key: str) -> str | None:
        """What is wrong with `key`'s record (None: it describes the object's bytes)."""
        ...

    def read_unrecorded(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes without consulting its record (None when absent)."""
        ...

    def rebuild_record(
        self, key: str, *, content_type: str, cache_control: str | None, judge: Judge
    ) -> str | None:
        """Hash `key`'s bytes; if `judge` accepts them, write the record that describes them.
        Returns why not (judge's reason, or the object changed meanwhile), None when done."""
        ...

    def drop_orphan_records(self, prefix: str) -> list[str]:
        """Remove records of objects that no longer exist; return their keys."""
        ...


def sha256_hex(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    return sha256_of(source)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, flags: int, *, create: bool = False, hint: str) -> int:
    """A descriptor on `path` if it is a regular file (or absent, with `create`).

    lstat first, then open with O_NOFOLLOW | O_NONBLOCK, then fstat: a fifo, device, socket
    or symlink put at the name is refused without blocking and without being followed, even
    if it is swapped in between. FileNotFoundError when absent and not `create`."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
    else:
        if not stat.S_ISREG(before.st_mode):
            raise PublishError(
                f"{path} is {_kind(before.st_mode)}, not a regular file; refusing to open it",
                hint=hint,
            )
    extra = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags | extra, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise PublishError(
                f"{path} is not a regular file ({exc.strerror}); refusing to open it", hint=hint
            ) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise PublishError(
            f"{path} is {_kind(mode)}, not a regular file; refusing to open it", hint=hint
        )
    return fd


def read_bounded(fd: int, *, max_bytes: int, where: str) -> bytes:
    """All of a regular file's bytes, or DocumentTooLarge without reading past `max_bytes`."""
    size = os.fstat(fd).st_size
    if size > max_bytes:
        raise too_large(where, size, max_bytes)
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:  # grew while being read
            raise too_large(where, total, max_bytes)
    return b"".join(chunks)


def too_large(where: str, size: int, max_bytes: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{where} is {size} bytes, over the {max_bytes} byte limit for a farm document; "
        "it was not read",
        hint="nothing was changed; it is not one the farm wrote: restore it from the "
        "bucket's versioning or a backup (docs/RELIABILITY.md, repairing a store)",
    )


@dataclass(frozen=True, kw_only=True)
class _Record:
    etag: str
    sha256: str
    size: int | None  # records from before sizes were kept have none
    metadata: dict[str, str]


class DirectoryStore:
    """Objects as files under `root`, with S3's conditional-write semantics.

    A lock file serialises check-and-write across processes on this machine (readers take it
    shared); every write goes to a temp file and is renamed into place, so a reader never sees
    half an object. ETags are the sha256 of the content; the record of each object (etag,
    sha256, size, content type) sits in root/.farm-meta/KEY.json. The file is the truth:
    a file without its record (a store copied with `rsync dir/*`, `.farm-meta` deleted or
    restored from elsewhere) stops every operation on it until the records are rebuilt.
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

    # --- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The object's path: its directory resolved inside the store, its own name not (so
        a symlink put there is seen, and refused, as one)."""
        name = key.rsplit("/", 1)[-1]
        parent = (self.root / key).parent.resolve()
        if (
            name in ("", ".", "..")
            or not parent.is_relative_to(self.root)
            or key.split("/", 1)[0] in (META_DIR, LOCK_FILE, RUN_LOCK_FILE)
        ):
            raise PublishError(f"invalid key {key!r}")
        return parent / name

    def _object_stat(self, path: Path) -> os.stat_result | None:
        """The object's lstat, None when absent; a non-regular file is refused."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise PublishError(
                f"{path} is {_kind(st.st_mode)}, not a published file; refusing to read or "
                "replace it",
                hint="nothing was changed; remove it, then publish the cell again",
            )
        return st

    def _meta_root(self) -> Path | None:
        """root/.farm-meta when it is a real directory, None when absent. A symlink (records
        outside the store) or anything else there is refused: records are never read from, nor
        written to, anywhere but the store itself."""
        path = self.root / META_DIR
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            raise StoreRecordsError(
                f"{path} is a symlink to {target[:200]!r}; refusing to read or write the "
                "store's records anywhere but inside it",
                hint="nothing was changed; remove the link (what it points to is left alone), "
                f"then run `{REPAIR_COMMAND}`",
            )
        if not stat.S_ISDIR(st.st_mode):
            raise StoreRecordsError(
                f"{path} is {_kind(st.st_mode)}, not the store's record directory",
                hint=f"nothing was changed; remove it, then run `{REPAIR_COMMAND}`",
            )
        return path

    def _record_path(self, meta_root: Path, key: str) -> Path:
        path = meta_root / f"{key}.json"
        # A directory inside .farm-meta that is a symlink would lead out of it.
        if not path.resolve().is_relative_to(meta_root):
            raise StoreRecordsError(
                f"{path} leads outside {meta_root} (a symlink); refusing to use it",
                hint=f"nothing was changed; remove the link, then run `{REPAIR_COMMAND}`",
            )
        return path

    # --- locks ---------------------------------------------------------------------------

    def _lock_hint(self, name: str) -> str:
        return f"nothing was changed; remove {self.root / name}: the farm creates a regular file"

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the local store {self.root}: {exc.strerror or exc}"
            ) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_root()
        fd = open_regular(
            self.root / LOCK_FILE, os.O_RDWR, create=True, hint=self._lock_hint(LOCK_FILE)
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def _read_locked(self) -> Iterator[None]:
        """A shared lock for reads, taken through a read-only descriptor: a store on a
        read-only mount (or one the reader may not write) can still be read and checked.
        Without a lock file no writer has run here yet; writes are renames anyway."""
        try:
            fd = open_regular(self.root / LOCK_FILE, os.O_RDONLY, hint=self._lock_hint(LOCK_FILE))
        except (FileNotFoundError, NotADirectoryError):
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def run_lock(
        self, holder: str, *, prefix: str, on_lost: Callable[[str], None]
    ) -> Iterator[None]:
        """flock on root/.farm-run-lock, never waited for: a second run is refused at once.
        The kernel releases it when the holder exits, however it dies. Holds every prefix."""
        del prefix, on_lost  # one lock for the directory; a flock is never lost
        self._ensure_root()
        path = self.root / RUN_LOCK_FILE
        fd = open_regular(path, os.O_RDWR, create=True, hint=self._lock_hint(RUN_LOCK_FILE))
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another run"
                raise StoreBusy(
                    f"{self.describe()} is held by {' '.join(held.split())[:300]}",
                    hint="nothing was done; one nightly at a time runs against a store: "
                    "wait for it to end, then run again (it skips what the other published)",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    # --- records -------------------------------------------------------------------------

    def _record(self, key: str, meta_root: Path | None) -> _Record | None:
        if meta_root is None:
            return None
        path = self._record_path(meta_root, key)
        try:
            fd = open_regular(path, os.O_RDONLY, hint=RECORDS_HINT)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            body = read_bounded(fd, max_bytes=_MAX_RECORD_BYTES, where=str(path))
        finally:
            os.close(fd)
        try:
            raw = json.loads(body.decode("utf-8"))
            etag, sha256, size = raw["etag"], raw["sha256"], raw.get("size")
            metadata = raw.get("metadata") or {}
            if not (
                isinstance(etag, str)
                and isinstance(sha256, str)
                and _SHA256.fullmatch(sha256)
                and (size is None or (isinstance(size, int) and not isinstance(size, bool)))
                and isinstance(metadata, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
            ):
                raise TypeError("fields of the wrong type")
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
            raise StoreRecordsError(
                f"{self.describe(key)}: its metadata {path} is damaged ({exc})", hint=RECORDS_HINT
            ) from None
        return _Record(etag=etag, sha256=sha256, size=size, metadata=metadata)

    def _unrecorded(self, key: str, meta_root: Path | None) -> StoreRecordsError:
        """One line: what is missing, how much of it, and how to rebuild it."""
        missing = self._objects_without_records(meta_root)
        count = f"{len(missing)} published object{'s' if len(missing) != 1 else ''}"
        if meta_root is None:
            what = f"its record area {META_DIR}/ is missing: {count} have no record"
        else:
            what = f"its record area {META_DIR}/ is partial: {count} have no record"
        return StoreRecordsError(
            f"local store {self.root}: {what} (among them {key})", hint=RECORDS_HINT
        )

    def _objects_without_records(self, meta_root: Path | None) -> list[str]:
        keys = self._keys("")
        if meta_root is None:
            return keys
        return [k for k in keys if not self._record_path(meta_root, k).is_file()]

    def _keys(self, prefix: str) -> list[str]:
        top = self.root / prefix if prefix else self.root
        if not top.resolve().is_relative_to(self.root) or not top.is_dir():
            return []
        keys = []
        base = prefix.rstrip("/") + "/" if prefix else ""
        for _path, relative, st in walk_tree(str(top)):
            parts = relative.split("/")
            if any(part.startswith(".") for part in parts):
                continue  # .farm-meta, lock files, temp files (.NAME.tmp-*), hidden files
            if stat.S_ISREG(st.st_mode):
                keys.append(base + relative)
        return keys

    def _head(self, key: str) -> StoredObject | None:
        path = self._path(key)
        meta_root = self._meta_root()  # a symlinked record area is refused even for new keys
        st = self._object_stat(path)
        if st is None:
            return None
        record = self._record(key, meta_root)
        if record is None:
            raise self._unrecorded(key, meta_root)
        if record.size is not None and record.size != st.st_size:
            raise StoreRecordsError(
                f"local store {self.root}: the record of {key} describes other bytes "
                f"({record.size} bytes, the file holds {st.st_size})",
                hint=RECORDS_HINT,
            )
        return StoredObject(
            key=key, size=st.st_size, etag=record.etag, sha256=record.sha256,
            metadata=record.metadata,
        )  # fmt: skip

    def _write_record(
        self, meta_root: Path, key: str, *, sha256: str, size: int, content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        record = {
            "etag": sha256,
            "sha256": sha256,
            "size": size,
            "content_type": content_type,
            "metadata": dict(metadata or {}),
        }
        write_atomic(self._record_path(meta_root, key), json.dumps(record).encode())

    # --- ObjectStore ---------------------------------------------------------------------

    def head(self, key: str) -> StoredObject | None:
        with self._read_locked():
            return self._head(key)

    def get(self, key: str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[bytes, str] | None:
        with self._read_locked():
            found = self._head(key)
            if found is None:
                return None
            fd = open_regular(self._path(key), os.O_RDONLY, hint=RECORDS_HINT)
            try:
                body = read_bounded(fd, max_bytes=max_bytes, where=self.describe(key))
            finally:
                os.close(fd)
            if sha256_hex(body) != found.sha256:
                raise StoreRecordsError(
                    f"local store {self.root}: the record of {key} describes other bytes "
                    f"(sha256 {found.sha256}, the file's is {sha256_hex(body)})",
                    hint=RECORDS_HINT,
                )
            return body, found.etag

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
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        with self._locked():
            current = self._head(key)  # a file without its record stops here
            if create_only and current is not None:
                raise ObjectExists(f"{self.describe(key)} already exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(f"{self.describe(key)} changed since it was read")
            meta_root = self._meta_root() or self.root / META_DIR
            record_path = self._record_path(meta_root, key)
            previous = record_path.read_bytes() if current is not None else None
            # The record first: killed between the two renames, a new object leaves only an
            # orphan record (no object: nothing to describe), a replaced one a record that
            # describes other bytes, which every read then refuses until repaired.
            self._write_record(
                meta_root, key, sha256=actual, size=size, content_type=content_type,
                metadata=metadata,
            )  # fmt: skip
            try:
                write_atomic(path, source)
            except BaseException:
                # The object was not replaced: its record as it was (best effort; the
                # object's error is the one to report, and a mismatch is refused later).
                with contextlib.suppress(OSError, PublishError):
                    if previous is None:
                        record_path.unlink(missing_ok=True)
                    else:
                        write_atomic(record_path, previous)
                raise
        return StoredObject(
            key=key, size=size, etag=actual, sha256=actual, metadata=dict(metadata or {}),
        )  # fmt: skip

    def verify(self, key: str, source: Path | bytes, *, sha256: str) -> StoredObject:
        with self._read_locked():
            found = self._head(key)
            size = len(source) if isinstance(source, bytes) else source.stat().st_size
            if found is None:
                raise PublishError(f"read-back: {self.describe(key)} is missing after upload")
            stored_sha256 = sha256_hex(self._path(key))  # a real read-back of the bytes
        if found.size != size or stored_sha256 != sha256 or found.sha256 != sha256:
            raise PublishError(
                f"read-back: {self.describe(key)} holds {found.size} bytes sha256 "
                f"{stored_sha256}, expected {size} bytes sha256 {sha256}"
            )
        return found

    def delete(self, key: str, *, if_match: str) -> None:
        path = self._path(key)
        with self._locked():
            current = self._head(key)
            if current is None:
                return
            if current.etag != if_match:
                raise PreconditionFailed(f"{self.describe(key)} changed since it was written")
            path.unlink()
            meta_root = self._meta_root()
            if meta_root is not None:
                self._record_path(meta_root, key).unlink(missing_ok=True)

    def sweep_stale(self, prefix: str, *, older_than: float) -> list[str]:
        """write_atomic's temp files (`.NAME.tmp-XXXXXXXX`) a killed publisher left, objects'
        and records' alike. A live writer keeps its temp file's mtime fresh, so age tells the
        two apart. Symlinks are never followed (a symlinked record area is refused first)."""
        meta_root = self._meta_root()
        tops = [self.root / prefix if prefix else self.root]
        if meta_root is not None and prefix:
            tops.append(meta_root / prefix)
        cutoff = time.time() - older_than
        removed: list[str] = []
        for top in tops:
            if not top.resolve().is_relative_to(self.root) or not top.is_dir():
                continue
            for path, relative, st in walk_tree(str(top)):
                name = relative.rsplit("/", 1)[-1]
                if (
                    re.fullmatch(r"\..+\.tmp-[A-Za-z0-9_]+", name)
                    and stat.S_ISREG(st.st_mode)
                    and st.st_mtime < cutoff
                ):
                    Path(path).unlink(missing_ok=True)
                    removed.append(str(Path(path).relative_to(self.root)))
        return sorted(removed)

    # --- repair --------------------------------------------------------------------------

    def maintenance(self) -> AbstractContextManager[None]:
        self._meta_root()  # a symlinked or foreign record area is refused, not repaired through
        return self._locked()

    def list_keys(self, prefix: str) -> list[str]:
        return self._keys(prefix)

    def record_problem(self, key: str) -> str | None:
        meta_root = self._meta_root()
        path = self._path(key)
        if self._object_stat(path) is None:
            return None
        try:
            record = self._record(key, meta_root)
        except StoreRecordsError as exc:
            return f"had a damaged record ({exc.message})"
        if record is None:
            return "had no record"
        actual = sha256_hex(path)
        if record.sha256 != actual or record.etag != actual:
            return f"had a record of other bytes (sha256 {record.sha256}, the file's is {actual})"
        size = path.stat().st_size
        if record.size is not None and record.size != size:
            return f"had a record of other bytes ({record.size} bytes, the file holds {size})"
        return None

    def read_unrecorded(self, key: str, *, max_bytes: int) -> bytes | None:
        path = self._path(key)
        if self._object_stat(path) is None:
            return None
        fd = open_regular(path, os.O_RDONLY, hint=RECORDS_HINT)
        try:
            return read_bounded(fd, max_bytes=max_bytes, where=self.describe(key))
        finally:
            os.close(fd)

    def rebuild_record(
        self, key: str, *, content_type: str, cache_control: str | None, judge: Judge
    ) -> str | None:
        del cache_control
        path = self._path(key)
        st = self._object_stat(path)
        if st is None:
            return f"{key} vanished while being repaired"
        actual = sha256_hex(path)
        if (refused := judge(st.st_size, actual)) is not None:
            return refused
        meta_root = self._meta_root() or self.root / META_DIR
        self._write_record(
            meta_root, key, sha256=actual, size=st.st_size, content_type=content_type
        )
        return None

    def drop_orphan_records(self, prefix: str) -> list[str]:
        meta_root = self._meta_root()
        if meta_root is None:
            return []
        top = meta_root / prefix if prefix else meta_root
        if not top.resolve().is_relative_to(meta_root) or not top.is_dir():
            return []
        base = prefix.rstrip("/") + "/" if prefix else ""
        dropped = []
        for path, relative, st in walk_tree(str(top)):
            if not stat.S_ISREG(st.st_mode) or not relative.endswith(".json"):
                continue
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            key = base + relative.removesuffix(".json")
            try:
                absent = self._object_stat(self.root / key) is None
            except PublishError:
                absent = False
            if absent:
                Path(path).unlink(missing_ok=True)
                dropped.append(key)
        return dropped
