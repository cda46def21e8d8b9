"""Issue 16, findings 1 and 6, against a real S3 server (moto over HTTP, the compose service).

S3's record of an object is its `sha256` metadata (beside S3's own SHA-256 checksum). A bucket
whose objects lost it (`aws s3 sync` from a copy re-uploads without it), lost it for some
objects only, or carries records of other bytes (metadata copied from elsewhere), keeps every
manifest entry and every archive: publish and check-manifest stop in one line naming the key
and `check-manifest --repair`, which re-uploads the same bytes with their record (If-Match).
A manifest restored alone is refused until repaired. Manifests over the size limit are
refused before their body is read, and a damaged entry is named with nothing written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import run_cli
from tests.measure import run_measured
from tests.publish_support import make_artifact
from tests.s3.harness import S3Server

pytestmark = pytest.mark.integration

ARM = "3.13.5-debian-12-arm64"
AMD = "3.13.5-debian-12-amd64"
ARM_ARCHIVE = "python-3.13.5-debian-12-arm64.tar.zst"
AMD_ARCHIVE = "python-3.13.5-debian-12-amd64.tar.zst"


class Bucket:
    def __init__(self, server: S3Server, name: str, out: Path) -> None:
        self.server, self.name, self.out = server, name, out
        self.client = server.client()

    def cli(self, *args: str) -> tuple[int, str]:
        target = ["--bucket", self.name, "--endpoint-url", self.server.endpoint_url]
        result = run_cli(["--out", str(self.out), *args, *target], env=self.server.env())
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stderr

    def object_keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name).get("Contents", [])
        return sorted(o["Key"] for o in listing)

    def body(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()  # type: ignore[no-any-return]

    def state(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Every object's ETag and metadata: any write would change one (or add a key)."""
        return {
            key: (head["ETag"], head.get("Metadata", {}))
            for key in self.object_keys()
            for head in [self.client.head_object(Bucket=self.name, Key=key)]
        }

    def reupload(self, key: str, *, metadata: dict[str, str] | None = None) -> None:
        """The same bytes again, as another tool would upload them: with `metadata` (none:
        what `aws s3 sync` from a local copy leaves) and S3's SHA-256 checksum."""
        body = self.body(key)
        self.client.put_object(
            Bucket=self.name, Key=key, Body=body, Metadata=metadata or {},
            ChecksumAlgorithm="SHA256",
        )  # fmt: skip

    def manifest_names(self) -> list[str]:
        return sorted(r["name"] for r in json.loads(self.body("manifest.json"))["runtimes"])


def _error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def _strip_all(bucket: Bucket) -> None:
    for key in bucket.object_keys():
        bucket.reupload(key)


def _strip_some(bucket: Bucket) -> None:
    for key in ("manifest.json", ARM_ARCHIVE):
        bucket.reupload(key)


def _foreign(bucket: Bucket) -> None:
    # Records that belong to other bytes: S3's own checksum of each object says otherwise.
    other = hashlib.sha256(b"another object").hexdigest()
    for key in bucket.object_keys():
        bucket.reupload(key, metadata={"sha256": other})


DAMAGE: dict[str, Callable[[Bucket], None]] = {
    "deleted": _strip_all,
    "partial": _strip_some,
    "records of other bytes": _foreign,
}


@pytest.fixture
def bucket(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> Bucket:
    return Bucket(s3_server, s3_bucket, tmp_path / "out")


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_entry_and_archive_survive_lost_records_in_s3(
    damage: Callable[[Bucket], None], bucket: Bucket
) -> None:
    artifacts = bucket.out / "artifacts"
    make_artifact(artifacts, arch="arm64", content=b"arm64 runtime, first build ")
    make_artifact(artifacts, arch="amd64", content=b"amd64 runtime ")
    code, err = bucket.cli("publish", ARM)
    assert code == 0, err
    published_arm = bucket.body(ARM_ARCHIVE)
    damage(bucket)
    before = bucket.state()

    code, err = bucket.cli("publish", AMD)
    line = _error_line(err)
    assert code == 10, err
    assert "sha256 record" in line and "check-manifest --repair" in line, line
    assert bucket.state() == before  # nothing written, not even the amd64 archive
    make_artifact(artifacts, arch="arm64", content=b"arm64 runtime, other bytes ")
    code, err = bucket.cli("publish", ARM)
    assert code == 10 and "check-manifest --repair" in _error_line(err), err
    assert bucket.body(ARM_ARCHIVE) == published_arm

    code, err = bucket.cli("check-manifest", "--repair", ARM)
    assert code == 0, err
    assert "record(s) rebuilt" in err
    assert bucket.body(ARM_ARCHIVE) == published_arm

    code, err = bucket.cli("publish", AMD)
    assert code == 0, err
    assert bucket.manifest_names() == [AMD_ARCHIVE, ARM_ARCHIVE]
    code, err = bucket.cli("publish", ARM)
    assert code == 10 and "use --force" in _error_line(err), err
    assert bucket.body(ARM_ARCHIVE) == published_arm
    code, err = bucket.cli("check-manifest", ARM, AMD)
    assert code == 0, err


def test_a_manifest_restored_alone_in_s3_is_refused_until_repaired(bucket: Bucket) -> None:
    make_artifact(bucket.out / "artifacts", arch="arm64")
    make_artifact(bucket.out / "artifacts", arch="amd64")
    make_artifact(bucket.out / "artifacts", arch="amd64", stack="debian-13")
    assert bucket.cli("publish", ARM)[0] == 0
    backup = bucket.body("manifest.json")
    assert bucket.cli("publish", AMD)[0] == 0
    # Restored from a backup with a plain upload: no record.
    bucket.client.put_object(Bucket=bucket.name, Key="manifest.json", Body=backup)

    code, err = bucket.cli("publish", "3.13.5-debian-13-amd64")
    assert code == 10 and "manifest.json has no sha256 record" in _error_line(err), err
    assert bucket.body("manifest.json") == backup
    assert bucket.cli("check-manifest", "--repair", ARM)[0] == 0
    assert bucket.body("manifest.json") == backup  # the same bytes, now with their record
    assert bucket.cli("publish", "3.13.5-debian-13-amd64")[0] == 0
    assert bucket.manifest_names() == [ARM_ARCHIVE, "python-3.13.5-debian-13-amd64.tar.zst"]


def test_repair_leaves_an_archive_that_contradicts_its_sha256_alone(bucket: Bucket) -> None:
    make_artifact(bucket.out / "artifacts", arch="arm64")
    assert bucket.cli("publish", ARM)[0] == 0
    bucket.client.put_object(Bucket=bucket.name, Key=ARM_ARCHIVE, Body=b"swapped in by hand")
    code, err = bucket.cli("check-manifest", "--repair", ARM)
    assert code == 10, err
    assert f"{ARM_ARCHIVE}: its bytes" in err and ".sha256" in err, err
    head = bucket.client.head_object(Bucket=bucket.name, Key=ARM_ARCHIVE)
    assert "sha256" not in head.get("Metadata", {})  # no record blessed those bytes
    code, err = bucket.cli("publish", ARM, "--force")
    assert code == 10 and "no sha256 record" in _error_line(err), err


def test_a_damaged_manifest_entry_in_s3_is_named_and_nothing_is_written(bucket: Bucket) -> None:
    make_artifact(bucket.out / "artifacts", arch="arm64")
    make_artifact(bucket.out / "artifacts", arch="amd64")
    assert bucket.cli("publish", ARM)[0] == 0
    manifest = json.loads(bucket.body("manifest.json"))
    del manifest["runtimes"][0]["stack"]  # the minimal repro
    body = json.dumps(manifest).encode()
    bucket.client.put_object(
        Bucket=bucket.name, Key="manifest.json", Body=body,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )  # fmt: skip
    before = bucket.state()
    code, err = bucket.cli("publish", AMD)
    line = _error_line(err)
    assert code == 10 and "runtimes[0]" in line and "stack" in line, line
    assert bucket.state() == before


def test_a_manifest_over_the_limit_in_s3_is_refused_unread(bucket: Bucket) -> None:
    """The issue's 143 MB manifest in S3 peaked at 898 MB RSS, then a traceback. Here a
    40 MB one is refused from its Content-Length, under 512 MB RSS in the child."""
    make_artifact(bucket.out / "artifacts", arch="amd64")
    body = b" " * (40 * 1024 * 1024)
    bucket.client.put_object(
        Bucket=bucket.name, Key="manifest.json", Body=body,
        Metadata={"sha256": hashlib.sha256(body).hexdigest()},
    )  # fmt: skip
    for command in (["publish", AMD], ["check-manifest", AMD]):
        target = ["--bucket", bucket.name, "--endpoint-url", bucket.server.endpoint_url]
        result = run_measured(
            ["--out", str(bucket.out), *command, *target], env=bucket.server.env()
        )
        line = _error_line(result.stderr)
        assert result.returncode == 10 and "byte limit" in line and "manifest.json" in line, line
        assert result.peak_rss_kb < 512 * 1024, f"{command[0]} peaked at {result.peak_rss_kb} KB"
    assert AMD_ARCHIVE not in bucket.object_keys()


def test_a_multipart_archive_synced_without_its_record_is_repaired(bucket: Bucket) -> None:
    """Over boto3's 8 MB threshold both the sync and the repair go multipart (ETag -N, a
    composite checksum that is not the object's sha256)."""
    import io

    make_artifact(bucket.out / "artifacts", arch="arm64", size_bytes=12 * 1024 * 1024)
    make_artifact(bucket.out / "artifacts", arch="amd64")
    assert bucket.cli("publish", ARM)[0] == 0
    body = bucket.body(ARM_ARCHIVE)
    bucket.client.upload_fileobj(io.BytesIO(body), bucket.name, ARM_ARCHIVE)  # as `aws s3 cp`
    assert "-" in bucket.client.head_object(Bucket=bucket.name, Key=ARM_ARCHIVE)["ETag"]
    # A cell whose objects all have their records publishes; the other's are refused.
    assert bucket.cli("publish", AMD)[0] == 0
    code, err = bucket.cli("publish", ARM)
    assert code == 10 and f"{ARM_ARCHIVE} has no sha256 record" in _error_line(err), err
    assert bucket.cli("check-manifest", "--repair", ARM)[0] == 0
    assert bucket.body(ARM_ARCHIVE) == body
    head = bucket.client.head_object(Bucket=bucket.name, Key=ARM_ARCHIVE)
    assert head["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert bucket.cli("publish", ARM)[0] == 0  # unchanged: the same bytes, recorded
    assert bucket.manifest_names() == [AMD_ARCHIVE, ARM_ARCHIVE]
    assert bucket.cli("check-manifest", ARM, AMD)[0] == 0


def test_repair_never_overwrites_an_object_changed_while_it_was_hashed(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-upload carries If-Match on the ETag that was downloaded and hashed."""
    from orchestrator.publish.s3store import S3Store

    for key, value in bucket.server.env().items():
        monkeypatch.setenv(key, value)
    store = S3Store(bucket=bucket.name, endpoint_url=bucket.server.endpoint_url)
    bucket.client.put_object(Bucket=bucket.name, Key="manifest.json", Body=b'{"a": 1}')

    def judge(size: int, sha256: str) -> str | None:
        # Another writer gets in between the download and the upload.
        bucket.client.put_object(Bucket=bucket.name, Key="manifest.json", Body=b'{"b": 2}')
        return None

    refused = store.rebuild_record(
        "manifest.json", content_type="application/json", cache_control=None, judge=judge
    )
    assert refused is not None and "changed while being repaired" in refused
    assert bucket.body("manifest.json") == b'{"b": 2}'
    head = bucket.client.head_object(Bucket=bucket.name, Key="manifest.json")
    assert "sha256" not in head["Metadata"]
