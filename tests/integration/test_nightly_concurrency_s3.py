"""Issue 16: two `nightly` runs started at once against one S3 store, from two machines (two
OUT directories): one holds the store through its lease object, the other is refused at once
(exit 10, one line naming the holder) and builds nothing; every cell is built once and
published; the next run skips them all; the lease is gone once the holder ends.

Real CLI processes (tests/fake_nightly.py: the real nightly with a fake build, no Docker)
against the real S3 test server; the local store's lock: tests/unit/test_nightly_concurrency.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fake_nightly import CELLS, assert_refused_and_built_once, builds_by_pid, race
from tests.s3.harness import S3Server

pytestmark = pytest.mark.integration


def test_two_nightlies_at_once_on_one_bucket(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    builds, release = tmp_path / "builds.log", tmp_path / "release"
    env = {**s3_server.env(), "FARM_PUBLISH_BUCKET": s3_bucket,
           "FARM_PUBLISH_ENDPOINT_URL": s3_server.endpoint_url}  # fmt: skip

    def args(machine: str) -> list[str]:
        out = tmp_path / machine
        return ["--out", str(out), "nightly", *CELLS, "--jobs", "1",
                "--report", str(tmp_path / f"{machine}.json")]  # fmt: skip

    winner, loser = race(builds, release, args("one"), args("two"), env)
    assert_refused_and_built_once(winner, loser, builds)
    assert "holds the store" in loser[1], loser[1]
    client = s3_server.client()
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key="manifest.json")["Body"].read())
    assert len(manifest["runtimes"]) == len(CELLS)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert ".farm-run-lease.json" not in keys  # released

    # A third machine: everything published, nothing to build.
    from tests.fake_nightly import start_fake_nightly

    again = start_fake_nightly(builds, release, args("three"), env)
    assert again.wait(timeout=300) == 0, again.communicate()[1]
    report = json.loads((tmp_path / "three.json").read_text())
    assert {c["result"] for c in report["cells"]} == {"skipped"}
    assert len(builds_by_pid(builds)) == len(CELLS)
