"""A whole run's hold on a store that has no locks of its own (S3): a lease object.

One object, `{prefix}.farm-run-lease.json`, written create-only (If-None-Match: *): the run
that creates it holds the store. The holder renews it (If-Match on its ETag) every third of
its lifetime. A holder that dies stops renewing; once its lease has expired, the next run
takes it over (If-Match on the expired lease's ETag, so only one run can). Releasing deletes
it (If-Match again: a lease taken over meanwhile is not ours to delete).

Expiry is judged by the clocks of the machines involved (UTC); LEASE_SECONDS is long
against any sane clock skew.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from orchestrator.errors import PublishError
from orchestrator.publish.store import (
    ObjectExists,
    ObjectStore,
    PreconditionFailed,
    StoreBusy,
    sha256_hex,
)

LEASE_SECONDS = 15 * 60
_MAX_LEASE_BYTES = 64 * 1024
_TAKE_ATTEMPTS = 3


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class _Held:
    holder: str
    token: str
    renewed_at: str
    expires: float


def _parse(body: bytes) -> _Held | None:
    try:
        raw = json.loads(body.decode("utf-8"))
        expires = dt.datetime.strptime(raw["expires_at"], "%Y-%m-%dT%H:%M:%SZ")
        return _Held(
            holder=" ".join(str(raw["holder"]).split())[:200],
            token=str(raw.get("token", "")),
            renewed_at=str(raw.get("renewed_at", "?"))[:40],
            expires=expires.replace(tzinfo=dt.UTC).timestamp(),
        )
    except (ValueError, RecursionError, TypeError, KeyError, AttributeError):
        return None  # not JSON, not UTF-8, fields missing or of the wrong kind


class Lease:
    def __init__(
        self,
        store: ObjectStore,
        key: str,
        *,
        holder: str,
        on_lost: Callable[[str], None],
        seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key = key
        self.holder = holder
        self.on_lost = on_lost
        self.seconds = seconds
        self.clock = clock
        self.token = uuid.uuid4().hex
        self.acquired_at = clock()
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = self.clock()
        document = {
            "holder": self.holder,
            "token": self.token,
            "acquired_at": _iso(self.acquired_at),
            "renewed_at": _iso(now),
            "expires_at": _iso(now + self.seconds),
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    def _put(self, *, if_match: str | None = None) -> str:
        body = self._body()
        return self.store.put(
            self.key, body, sha256=sha256_hex(body), content_type="application/json",
            create_only=if_match is None, if_match=if_match, cache_control="no-store",
        ).etag  # fmt: skip

    def acquire(self) -> None:
        where = self.store.describe(self.key)
        for _ in range(_TAKE_ATTEMPTS):
            try:
                self.etag = self._put()
                return
            except ObjectExists:
                pass
            found = self.store.get(self.key, max_bytes=_MAX_LEASE_BYTES)
            if found is None:
                continue  # released meanwhile
            held = _parse(found[0])
            if held is not None and held.token == self.token:
                self.etag = found[1]  # our own write landed; its answer was lost
                return
            if held is None:
                raise StoreBusy(
                    f"{where}: the run lease is damaged, so whether a run holds the store "
                    "cannot be told",
                    hint=f"nothing was done; if no nightly is running against it, delete {where}",
                )
            if held.expires > self.clock():
                raise StoreBusy(
                    f"{where}: {held.holder} holds the store (lease renewed {held.renewed_at}, "
                    f"expires {_iso(held.expires)})",
                    hint="nothing was done; one nightly at a time runs against a store: wait "
                    "for it to end, then run again (it skips what the other published); a run "
                    "that died holds it until the lease expires",
                )
            try:
                self.etag = self._put(if_match=found[1])  # a dead holder's: take it over
                return
            except PreconditionFailed:
                continue  # another run took it over first; see who
        raise StoreBusy(
            f"{where}: the run lease changed hands {_TAKE_ATTEMPTS} times while being taken",
            hint="nothing was done; another run is starting against this store, run again later",
        )

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        renewed = self.clock()
        while not self._stop.wait(self.seconds / 3):
            try:
                self.etag = self._put(if_match=self.etag)
                renewed = self.clock()
            except PreconditionFailed:
                if self._still_ours():
                    continue  # an earlier renewal landed though its answer was lost
                self._lose("another run took the lease over (this run was not renewing it)")
                return
            except PublishError as exc:
                if self.clock() - renewed >= self.seconds:
                    self._lose(f"it could not be renewed for {self.seconds:g} s ({exc})")
                    return

    def _still_ours(self) -> bool:
        try:
            found = self.store.get(self.key, max_bytes=_MAX_LEASE_BYTES)
        except PublishError:
            return False
        held = _parse(found[0]) if found else None
        if found is None or held is None or held.token != self.token:
            return False
        self.etag = found[1]
        return True

    def _lose(self, why: str) -> None:
        self.lost = True
        self.on_lost(f"lost the run lease {self.store.describe(self.key)}: {why}")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is not None and not self.lost:
            with suppress(PublishError):  # an expired lease is as good as released
                self.store.delete(self.key, if_match=self.etag)


@contextmanager
def hold_lease(
    store: ObjectStore, key: str, *, holder: str, on_lost: Callable[[str], None]
) -> Iterator[None]:
    lease = Lease(store, key, holder=holder, on_lost=on_lost)
    lease.acquire()
    try:
        lease.start_renewing()
        yield
    finally:
        lease.release()
