"""Issue 16: two `nightly` runs started at once against one store. One holds the store for its
whole run, the other is refused at once (exit 10, one line naming the holder) and builds
nothing; every cell is built once and published; the next run skips them all.

Two real CLI processes (tests/fake_nightly.py: the real nightly with a fake build, no Docker)
against the real local store and its real lock; the S3 lease is exercised the same way in
tests/integration/test_nightly_concurrency_s3.py, and in-process below.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import PublishError
from orchestrator.publish.lease import Lease, hold_lease
from orchestrator.publish.store import DirectoryStore, StoreBusy
from tests.fake_nightly import (
    CELLS,
    assert_refused_and_built_once,
    builds_by_pid,
    race,
    start_fake_nightly,
)
from tests.publish_support import store_write


def test_two_nightlies_at_once_on_the_local_store(tmp_path: Path) -> None:
    out = tmp_path / "out"  # one machine, one OUT, its default store OUT/publish
    builds, release = tmp_path / "builds.log", tmp_path / "release"
    args = ["--out", str(out), "nightly", *CELLS, "--jobs", "1", "--report"]

    def while_held() -> None:
        # --dry-run takes no hold: it plans while the store is held.
        plan = start_fake_nightly(builds, release, ["--out", str(out), "nightly", "--dry-run",
                                                    *CELLS])  # fmt: skip
        stdout, stderr = plan.communicate(timeout=120)
        assert plan.returncode == 0, stderr
        assert stdout.count("build ") == len(CELLS), stdout

    winner, loser = race(
        builds,
        release,
        [*args, str(tmp_path / "a.json")],
        [*args, str(tmp_path / "b.json")],
        {},
        while_held=while_held,
    )
    assert_refused_and_built_once(winner, loser, builds)
    manifest = json.loads((out / "publish" / "manifest.json").read_text())
    assert len(manifest["runtimes"]) == len(CELLS)

    # The next run skips everything: nothing lost, nothing to build again.
    again = start_fake_nightly(builds, release, [*args, str(tmp_path / "c.json")])
    assert again.wait(timeout=300) == 0, again.communicate()[1]
    report = json.loads((tmp_path / "c.json").read_text())
    assert {c["result"] for c in report["cells"]} == {"skipped"}
    assert len(builds_by_pid(builds)) == len(CELLS)


# --- the S3 lease's logic, on the local store's conditional writes --------------------------

KEY = ".farm-run-lease.json"


def _lease(store: DirectoryStore, holder: str, lost: list[str], seconds: float = 900) -> Lease:
    return Lease(store, KEY, holder=holder, on_lost=lost.append, seconds=seconds)


def test_a_held_lease_refuses_a_second_run_naming_the_holder(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    lost: list[str] = []
    with hold_lease(store, KEY, holder="nightly pid 1 on a", on_lost=lost.append):
        with pytest.raises(StoreBusy, match="nightly pid 1 on a holds the store") as raised:
            _lease(store, "nightly pid 2 on b", lost).acquire()
        assert "\n" not in str(raised.value)
    assert store.head(KEY) is None  # released
    _lease(store, "nightly pid 2 on b", lost).acquire()  # free again
    assert lost == []


def test_an_expired_lease_is_taken_over_once(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    now = time.time()
    dead = Lease(store, KEY, holder="a dead run", on_lost=print, clock=lambda: now - 3600)
    dead.acquire()  # expired half an hour ago, never released
    takers = [_lease(store, f"run {i}", []) for i in range(4)]
    results: list[str] = []

    def take(lease: Lease) -> None:
        try:
            lease.acquire()
            results.append("held")
        except StoreBusy:
            results.append("busy")

    threads = [threading.Thread(target=take, args=(lease,)) for lease in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["busy", "busy", "busy", "held"]


def test_a_lease_is_renewed_and_a_lost_one_is_reported(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    lost: list[str] = []
    lease = _lease(store, "holder", lost, seconds=0.6)
    lease.acquire()
    lease.start_renewing()
    try:
        first = lease.etag
        deadline = time.monotonic() + 10
        while lease.etag == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lease.etag != first, "the lease was never renewed"
        store_write(store, KEY, b'{"holder": "someone else"}')  # taken over behind our back
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lost and "took the lease over" in lost[0], lost
    finally:
        lease.release()
    assert store.head(KEY) is not None  # not ours any more: not deleted


def test_a_damaged_lease_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    store_write(store, KEY, b"not json")
    with pytest.raises(StoreBusy, match="damaged") as raised:
        _lease(store, "holder", []).acquire()
    assert "delete" in str(raised.value) and isinstance(raised.value, PublishError)


def test_a_killed_nightly_leaves_the_local_store_free(tmp_path: Path) -> None:
    """No clean-up runs after SIGKILL; the kernel drops the lock with the process."""
    import signal

    out = tmp_path / "out"
    builds, release = tmp_path / "builds.log", tmp_path / "release"
    args = ["--out", str(out), "nightly", CELLS[0]]
    held = start_fake_nightly(builds, release, args)
    deadline = time.monotonic() + 120
    while not builds_by_pid(builds) and time.monotonic() < deadline:
        time.sleep(0.1)  # it holds the store once its build has started
    assert builds_by_pid(builds), held.communicate(timeout=30)[1]
    held.send_signal(signal.SIGKILL)
    held.wait(timeout=30)
    release.touch()
    after = start_fake_nightly(builds, release, args)
    assert after.wait(timeout=300) == 0, after.communicate()[1]
    assert [pid for _, pid in builds_by_pid(builds)] == [held.pid, after.pid]


def test_a_lease_expires_fifteen_minutes_after_its_last_renewal(tmp_path: Path) -> None:
    import datetime as dt

    store = DirectoryStore(tmp_path / "store")
    Lease(store, KEY, holder="holder", on_lost=print).acquire()  # the default lifetime
    written = json.loads(store.get(KEY)[0])  # type: ignore[index]

    def at(field: str) -> dt.datetime:
        return dt.datetime.strptime(written[field], "%Y-%m-%dT%H:%M:%SZ")

    assert at("expires_at") - at("renewed_at") == dt.timedelta(minutes=15)


def test_a_lease_whose_own_write_landed_unanswered_is_still_held(tmp_path: Path) -> None:
    """A create or renewal that reached the store but whose answer was lost (a reset after
    the write) is recognised by the lease's token, not taken for another holder."""
    store = DirectoryStore(tmp_path / "store")
    lost: list[str] = []
    lease = _lease(store, "holder", lost, seconds=0.6)
    lease.etag = None
    lease._put()  # what the lost first attempt wrote
    lease.acquire()  # the retry: ObjectExists, then the token says it is ours
    assert lease.etag == store.head(KEY).etag  # type: ignore[union-attr]
    lease._put(if_match=lease.etag)  # a renewal that landed; its new ETag never reached us
    lease.start_renewing()
    try:
        time.sleep(1.0)  # a few renewals: the first meets the lost one's ETag
        assert lost == []
        assert lease.etag == store.head(KEY).etag  # type: ignore[union-attr]
    finally:
        lease.release()
    assert store.head(KEY) is None
