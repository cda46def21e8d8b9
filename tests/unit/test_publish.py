"""Publishing rules against the local directory store (no network, no Docker)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from orchestrator.errors import PublishError
from orchestrator.publish.manifests import manifest_key, uv_metadata_key
from orchestrator.publish.publisher import Publisher, load_artifact
from orchestrator.publish.store import DirectoryStore, StoredObject
from tests.publish_support import make_artifact


def _publisher(store: DirectoryStore, prefix: str = "runtimes") -> Publisher:
    return Publisher(store, prefix=prefix, progress=lambda _line: None)


def _manifest(store: DirectoryStore, prefix: str = "runtimes/") -> dict:  # type: ignore[type-arg]
    found = store.get(manifest_key(prefix))
    assert found is not None
    return json.loads(found[0])  # type: ignore[no-any-return]


def test_first_publish_writes_everything_in_order(tmp_path: Path) -> None:
    name = make_artifact(tmp_path / "artifacts")
    store = DirectoryStore(tmp_path / "store")
    outcome = _publisher(store).publish(load_artifact(tmp_path / "artifacts", name))
    assert outcome.action == "uploaded"
    root = tmp_path / "store" / "runtimes"
    assert (root / name).read_bytes() == (tmp_path / "artifacts" / name).read_bytes()
    assert (root / f"{name}.sha256").is_file()
    published = json.loads((root / name.replace(".tar.zst", ".json")).read_text())
    assert published["published"]["url"] == outcome.url
    manifest = _manifest(store)
    assert [r["name"] for r in manifest["runtimes"]] == [name]
    assert manifest["runtimes"][0]["url"] == outcome.url
    uv = json.loads(store.get(uv_metadata_key("runtimes", "debian-12", "amd64"))[0])  # type: ignore[index]
    entry = uv["cpython-3.13.5-linux-x86_64-gnu"]
    assert entry["url"] == outcome.url and entry["arch"] == {"family": "x86_64", "variant": None}
    assert (entry["major"], entry["minor"], entry["patch"], entry["libc"]) == (3, 13, 5, "gnu")


def test_identical_republish_is_a_no_op(tmp_path: Path) -> None:
    name = make_artifact(tmp_path / "artifacts")
    store = DirectoryStore(tmp_path / "store")
    _publisher(store).publish(load_artifact(tmp_path / "artifacts", name))
    before = {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    outcome = _publisher(store).publish(load_artifact(tmp_path / "artifacts", name))
    assert outcome.action == "unchanged"
    after = {p: p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    assert after == before


def test_different_archive_needs_force_and_force_records_it(tmp_path: Path) -> None:
    name = make_artifact(tmp_path / "one")
    store = DirectoryStore(tmp_path / "store")
    _publisher(store).publish(load_artifact(tmp_path / "one", name))
    old_sha = load_artifact(tmp_path / "one", name).sha256
    make_artifact(tmp_path / "two", content=b"different runtime bytes")
    with pytest.raises(PublishError, match="use --force to replace it"):
        _publisher(store).publish(load_artifact(tmp_path / "two", name))
    assert (tmp_path / "store" / "runtimes" / name).read_bytes() == b"runtime bytes"
    outcome = _publisher(store).publish(load_artifact(tmp_path / "two", name), force=True)
    assert outcome.action == "replaced"
    root = tmp_path / "store" / "runtimes"
    assert (root / name).read_bytes() == b"different runtime bytes"
    published = json.loads((root / name.replace(".tar.zst", ".json")).read_text())
    assert published["published"]["replaced"]["sha256"] == old_sha
    new_sha = load_artifact(tmp_path / "two", name).sha256
    assert (root / f"{name}.sha256").read_text().startswith(new_sha)
    assert _manifest(store)["runtimes"][0]["sha256"] == new_sha


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    name = make_artifact(tmp_path / "artifacts")
    lines: list[str] = []
    store = DirectoryStore(tmp_path / "store")
    publisher = Publisher(store, prefix="", progress=lines.append)
    outcome = publisher.publish(load_artifact(tmp_path / "artifacts", name), dry_run=True)
    assert outcome.action == "dry-run"
    assert not (tmp_path / "store").exists()
    assert len(lines) == 6 and all(line.startswith("would write ") for line in lines)
    assert any(line.endswith(".sbom.cdx.json") for line in lines)
    assert any(line.endswith("manifest.json") for line in lines)


def test_incomplete_or_inconsistent_artifact_is_refused(tmp_path: Path) -> None:
    name = make_artifact(tmp_path / "a")
    (tmp_path / "a" / f"{name}.sha256").unlink()
    with pytest.raises(PublishError, match=r"missing .*\.sha256"):
        load_artifact(tmp_path / "a", name)
    name = make_artifact(tmp_path / "b")
    (tmp_path / "b" / name).write_bytes(b"tampered")
    with pytest.raises(PublishError, match="disagree"):
        load_artifact(tmp_path / "b", name)


def test_unverified_artifact_is_refused(tmp_path: Path) -> None:
    name = make_artifact(tmp_path)
    record_path = tmp_path / name.replace(".tar.zst", ".json")
    record = json.loads(record_path.read_text())
    record["verification"] = {"ok": False, "failures": ["import:ssl: No module named '_ssl'"]}
    record_path.write_text(json.dumps(record))
    with pytest.raises(PublishError, match="verification failed"):
        load_artifact(tmp_path, name)
    del record["verification"]
    record_path.write_text(json.dumps(record))
    with pytest.raises(PublishError, match="verification: Field required"):
        load_artifact(tmp_path, name)


def test_concurrent_publishers_lose_no_manifest_entry(tmp_path: Path) -> None:
    cells = [("3.13.5", stack, arch) for stack in ("debian-12", "debian-13", "ubuntu-22.04",
             "ubuntu-24.04") for arch in ("amd64", "arm64")]  # fmt: skip
    names = [make_artifact(tmp_path / "a", version=v, stack=s, arch=a) for v, s, a in cells]
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            # Each thread its own store object, like separate machines sharing a bucket.
            _publisher(DirectoryStore(tmp_path / "store")).publish(
                load_artifact(tmp_path / "a", name)
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(
        r["name"] for r in _manifest(DirectoryStore(tmp_path / "store"))["runtimes"]
    ) == sorted(names)


class FailingManifestStore(DirectoryStore):
    """Fails every write of a manifest, as a permanent store error would."""

    def put(self, key: str, source: Path | bytes, **kwargs: object) -> StoredObject:  # type: ignore[override]
        if key.endswith(("manifest.json", "download-metadata.json")):
            raise PublishError(f"injected failure writing {key}")
        return super().put(key, source, **kwargs)  # type: ignore[arg-type]


def test_a_failure_leaves_manifests_unchanged(tmp_path: Path) -> None:
    first = make_artifact(tmp_path / "a", stack="debian-12")
    second = make_artifact(tmp_path / "a", stack="debian-13")
    store = DirectoryStore(tmp_path / "store")
    _publisher(store).publish(load_artifact(tmp_path / "a", first))
    before = _manifest(store)
    with pytest.raises(PublishError, match="injected"):
        _publisher(FailingManifestStore(tmp_path / "store")).publish(
            load_artifact(tmp_path / "a", second)
        )
    assert _manifest(store) == before
    # A later run completes the publish (the archive is already there, unchanged).
    outcome = _publisher(store).publish(load_artifact(tmp_path / "a", second))
    assert outcome.action == "unchanged"
    assert len(_manifest(store)["runtimes"]) == 2


def test_store_refuses_corrupt_content(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    with pytest.raises(PublishError, match="content sha256"):
        store.put("x", b"abc", sha256="0" * 64, content_type="text/plain")
    assert store.head("x") is None


def test_directory_store_conditions(tmp_path: Path) -> None:
    from orchestrator.publish.store import ObjectExists, PreconditionFailed, sha256_hex

    store = DirectoryStore(tmp_path)
    first = store.put("k", b"1", sha256=sha256_hex(b"1"), content_type="t", create_only=True)
    with pytest.raises(ObjectExists):
        store.put("k", b"2", sha256=sha256_hex(b"2"), content_type="t", create_only=True)
    with pytest.raises(PreconditionFailed):
        store.put("k", b"2", sha256=sha256_hex(b"2"), content_type="t", if_match="stale")
    store.put("k", b"2", sha256=sha256_hex(b"2"), content_type="t", if_match=first.etag)
    assert store.get("k") == (b"2", sha256_hex(b"2"))
    with pytest.raises(PublishError, match="invalid key"):
        store.head("../escape")


def test_build_numbers_order_rebuilds_and_an_identical_rebuild_keeps_its_number(
    tmp_path: Path,
) -> None:
    store = DirectoryStore(tmp_path / "store")
    uv_key = uv_metadata_key("runtimes", "debian-12", "amd64")

    def builds() -> tuple[str, str]:
        uv = json.loads(store.get(uv_key)[0])  # type: ignore[index]
        return _manifest(store)["runtimes"][0]["build"], uv["cpython-3.13.5-linux-x86_64-gnu"][
            "build"
        ]

    name = make_artifact(tmp_path / "one", built_at="2026-11-24T10:00:00Z")
    _publisher(store).publish(load_artifact(tmp_path / "one", name))
    assert builds() == ("20261124100000", "20261124100000")
    # Rebuilt from changed inputs, same bytes (the build is reproducible): nothing to upgrade.
    make_artifact(tmp_path / "same", built_at="2026-11-25T10:00:00Z")
    outcome = _publisher(store).publish(load_artifact(tmp_path / "same", name))
    assert outcome.action == "unchanged" and builds() == ("20261124100000", "20261124100000")
    # Rebuilt with other bytes and replaced: a higher build, which uv reads as an upgrade.
    make_artifact(tmp_path / "new", content=b"rebuilt", built_at="2026-11-25T10:00:00Z")
    _publisher(store).publish(load_artifact(tmp_path / "new", name), force=True)
    assert builds() == ("20261125100000", "20261125100000")


def test_directory_store_sweeps_only_old_temp_files(tmp_path: Path) -> None:
    import os
    import time

    from orchestrator.publish.store import DirectoryStore

    root = tmp_path / "store"
    (root / "farm").mkdir(parents=True)
    old_tmp = root / "farm" / ".python-3.13.5-x.tar.zst.tmp-abcdefgh"
    new_tmp = root / "farm" / ".manifest.json.tmp-ijklmnop"
    kept = root / "farm" / "python-3.13.5-x.tar.zst"
    for path in (old_tmp, new_tmp, kept):
        path.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old_tmp, (past, past))
    os.utime(kept, (past, past))
    store = DirectoryStore(root)
    assert store.sweep_stale("farm/", older_than=3600) == [
        "farm/.python-3.13.5-x.tar.zst.tmp-abcdefgh"
    ]
    assert not old_tmp.exists() and new_tmp.exists() and kept.exists()
    assert store.sweep_stale("../", older_than=0) == []  # never outside the store
