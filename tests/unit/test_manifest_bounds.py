"""Issue 16, finding 6: the store's documents are read with a size limit and every entry is
validated against the record schema before anything is written.

The repro: a 340 MB manifest.json made publish peak at 1988 MB RSS, then a `KeyError:
'stack'` traceback; so did deleting "stack" from one entry and publishing another cell. Here a
damaged entry is named in one line (exit 10) with nothing written, and a document over the
limit is refused before it is read, under 512 MB RSS (measured in the child process).
S3's side of the same: tests/integration/test_store_records_s3.py.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.errors import PublishError
from orchestrator.publish.manifests import manifest_key, uv_metadata_key
from orchestrator.publish.publisher import Publisher, load_artifact
from orchestrator.publish.store import MAX_DOCUMENT_BYTES, DirectoryStore
from tests.measure import run_measured
from tests.publish_support import make_artifact, store_write

ARM = "3.13.5-debian-12-arm64"
AMD = "3.13.5-debian-12-amd64"
ARM_ARCHIVE = "python-3.13.5-debian-12-arm64.tar.zst"
REPO_ROOT = Path(__file__).resolve().parents[2]
RSS_LIMIT_KB = 512 * 1024


def _without(field: str) -> Callable[[dict[str, Any]], Any]:
    return lambda entry: {k: v for k, v in entry.items() if k != field}


ENTRY_DAMAGE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "no stack": _without("stack"),  # the minimal repro
    "no sha256": _without("sha256"),
    "no url": _without("url"),
    "size a string": lambda e: {**e, "size": "12"},
    "size negative": lambda e: {**e, "size": -1},
    "sha256 short": lambda e: {**e, "sha256": "abc"},
    "arch unknown": lambda e: {**e, "arch": "riscv64"},
    "variant unknown": lambda e: {**e, "variant": "debug"},
    "version with a newline": lambda e: {**e, "version": "3.13.5\n"},
    "url with a space": lambda e: {**e, "url": "file:///a b"},
    "published_at not a time": lambda e: {**e, "published_at": "yesterday"},
    "name of another cell": lambda e: {**e, "name": "python-3.13.5-debian-12-amd64.tar.zst"},
    "stack a list": lambda e: {**e, "stack": ["debian-12"]},
}


def _published(store: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("damage", ENTRY_DAMAGE.values(), ids=ENTRY_DAMAGE.keys())
def test_a_damaged_manifest_entry_is_named_and_nothing_is_written(
    damage: Callable[[dict[str, Any]], Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.nightly import published_fingerprints

    out = tmp_path / "out"
    make_artifact(out / "artifacts", arch="arm64")
    make_artifact(out / "artifacts", arch="amd64")
    assert main(["--out", str(out), "publish", ARM]) == 0
    store = DirectoryStore(out / "publish")
    manifest = json.loads(store.get("manifest.json")[0])  # type: ignore[index]
    manifest["runtimes"] = [damage(r) for r in manifest["runtimes"]]
    store_write(store, "manifest.json", json.dumps(manifest).encode())
    before = _published(store.root)
    capsys.readouterr()

    code = main(["--out", str(out), "publish", AMD])
    line = _one_error(capsys.readouterr().err)
    assert code == 10
    assert "manifest.json: runtimes[0]" in line and ARM_ARCHIVE in line, line
    assert _published(store.root) == before  # not even the amd64 archive
    with pytest.raises(PublishError, match=r"runtimes\[0\]"):
        published_fingerprints(store, "")  # nightly's and build --skip-unchanged's read


def test_a_manifest_listing_a_runtime_twice_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a", arch="arm64")
    publisher = Publisher(store, prefix="", progress=lambda _line: None)
    publisher.publish(load_artifact(tmp_path / "a", name))
    manifest = json.loads(store.get("manifest.json")[0])  # type: ignore[index]
    manifest["runtimes"] *= 2
    store_write(store, "manifest.json", json.dumps(manifest).encode())
    other = make_artifact(tmp_path / "b", arch="amd64")
    with pytest.raises(PublishError, match="listed twice"):
        publisher.publish(load_artifact(tmp_path / "b", other))
    assert not (store.root / other).exists()


UV_DAMAGE: dict[str, Callable[[dict[str, Any]], Any]] = {
    "no sha256": _without("sha256"),
    "major a string": lambda e: {**e, "major": "3"},
    "arch a string": lambda e: {**e, "arch": "x86_64"},
    "url missing": _without("url"),
    "not an object": lambda e: [e],
}


@pytest.mark.parametrize("damage", UV_DAMAGE.values(), ids=UV_DAMAGE.keys())
def test_a_damaged_uv_entry_is_named_and_nothing_is_written(
    damage: Callable[[dict[str, Any]], Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    make_artifact(out / "artifacts", arch="amd64")
    make_artifact(out / "artifacts", arch="amd64", variant="freethreaded")
    assert main(["--out", str(out), "publish", AMD]) == 0
    store = DirectoryStore(out / "publish")
    key = uv_metadata_key("", "debian-12", "amd64")
    document = json.loads(store.get(key)[0])  # type: ignore[index]
    store_write(store, key, json.dumps({k: damage(v) for k, v in document.items()}).encode())
    before = _published(store.root)
    capsys.readouterr()

    code = main(["--out", str(out), "publish", "3.13.5t-debian-12-amd64"])  # same uv file
    line = _one_error(capsys.readouterr().err)
    assert code == 10
    assert "download-metadata.json: entry 'cpython-3.13.5-linux-x86_64-gnu'" in line, line
    assert _published(store.root) == before


def test_a_uv_key_the_farm_never_writes_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a")
    publisher = Publisher(store, prefix="", progress=lambda _line: None)
    publisher.publish(load_artifact(tmp_path / "a", name))
    key = uv_metadata_key("", "debian-12", "amd64")
    document = json.loads(store.get(key)[0])  # type: ignore[index]
    document["cpython-3.13.5-linux-x86_64-gnu\nINJECTED"] = next(iter(document.values()))
    store_write(store, key, json.dumps(document).encode())
    with pytest.raises(PublishError, match="not a key the farm writes"):
        publisher.publish(load_artifact(tmp_path / "a", name))


# --- size limits ----------------------------------------------------------------------------


def _huge(store: DirectoryStore, key: str, size: int) -> None:
    """A document of `size` bytes (sparse: no disk), with a record that describes its size, as
    a farm that wrote it would have left. Its sha256 is never reached: the size stops it."""
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)
    record = {"etag": "0" * 64, "sha256": "0" * 64, "size": size, "content_type": "x"}
    meta = store.root / ".farm-meta" / f"{key}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(record))


def _run_measured(args: list[str], *, module: str = "orchestrator") -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in KB) of the CLI in a child process."""
    measured = run_measured(args, module=module)
    return measured.returncode, measured.stderr, measured.peak_rss_kb


@pytest.mark.parametrize("key", ["manifest.json", "debian-12/amd64/download-metadata.json"])
def test_a_340_mb_document_is_refused_unread_in_bounded_memory(key: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    make_artifact(out / "artifacts")
    store = DirectoryStore(out / "publish")
    _huge(store, key, 340 * 1024 * 1024)
    for command in (["publish", AMD], ["check-manifest", AMD]):
        code, err, rss = _run_measured(["--out", str(out), *command])
        if command[0] == "check-manifest" and key != "manifest.json":
            # check-manifest reads uv's file only for cells the manifest lists (none here).
            assert code == 10 and "does not exist" in err, err
            continue
        line = _one_error(err)
        assert code == 10, err
        assert key in line and "byte limit" in line, line
        assert rss < RSS_LIMIT_KB, f"{command[0]} peaked at {rss} KB"
    assert not (store.root / "python-3.13.5-debian-12-amd64.tar.zst").exists()


def test_nightly_refuses_a_340_mb_manifest_before_building(tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = DirectoryStore(out / "publish")
    _huge(store, "manifest.json", 340 * 1024 * 1024)
    builds, release = tmp_path / "builds.log", tmp_path / "release"
    release.touch()
    code, err, rss = _run_measured(
        [str(builds), str(release), "--", "--out", str(out), "nightly", AMD],
        module="tests.fake_nightly",
    )
    line = _one_error(err)
    assert code == 10 and "manifest.json" in line and "byte limit" in line, err
    assert rss < RSS_LIMIT_KB
    assert not builds.exists()  # nothing built


def test_a_manifest_near_the_limit_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """What the limit admits stays far from 512 MB: ~13 000 valid entries, 15 MB."""
    out = tmp_path / "out"
    make_artifact(out / "artifacts", arch="arm64")
    make_artifact(out / "artifacts", arch="amd64")
    assert main(["--out", str(out), "publish", ARM]) == 0
    store = DirectoryStore(out / "publish")
    manifest = json.loads(store.get("manifest.json")[0])  # type: ignore[index]
    template = manifest["runtimes"][0]
    entries = []
    for i in range(13_000):
        entry = copy.deepcopy(template)
        entry["version"] = version = f"3.{100 + i // 1000}.{i % 1000}"
        entry["name"] = f"python-{version}-debian-12-arm64.tar.zst"
        entries.append(entry)
    manifest["runtimes"] += entries
    body = (json.dumps(manifest, indent=2) + "\n").encode()
    assert 14 * 1024 * 1024 < len(body) < MAX_DOCUMENT_BYTES
    store_write(store, "manifest.json", body)
    code, err, rss = _run_measured(["--out", str(out), "publish", AMD])
    assert code == 0, err
    assert rss < RSS_LIMIT_KB, f"publish peaked at {rss} KB"
    runtimes = json.loads(store.get("manifest.json")[0])["runtimes"]  # type: ignore[index]
    assert len(runtimes) == 13_002


def test_a_manifest_is_never_written_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.publish.publisher as publisher_module

    store = DirectoryStore(tmp_path / "store")
    publisher = Publisher(store, prefix="", progress=lambda _line: None)
    name = make_artifact(tmp_path / "a", arch="arm64")
    publisher.publish(load_artifact(tmp_path / "a", name))
    size = len(store.get(manifest_key(""))[0])  # type: ignore[index]
    monkeypatch.setattr(publisher_module, "MAX_DOCUMENT_BYTES", size + 100)
    before = store.get(manifest_key(""))
    other = make_artifact(tmp_path / "b", arch="amd64")
    with pytest.raises(PublishError, match="would grow to"):
        publisher.publish(load_artifact(tmp_path / "b", other))
    assert store.get(manifest_key("")) == before


@pytest.mark.parametrize("suffix", [".json", ".tar.zst.sha256"])
def test_a_local_artifact_file_is_read_with_a_limit(suffix: str, tmp_path: Path) -> None:
    name = make_artifact(tmp_path)
    path = tmp_path / (name.removesuffix(".tar.zst") + suffix)
    with path.open("ab") as handle:
        handle.truncate(MAX_DOCUMENT_BYTES + 1)
    with pytest.raises(PublishError, match="over the limit of") as raised:
        load_artifact(tmp_path, name)
    assert "\n" not in str(raised.value)


def test_a_local_record_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    name = make_artifact(tmp_path)
    record = tmp_path / name.replace(".tar.zst", ".json")
    record.unlink()
    os.mkfifo(record)
    with pytest.raises(PublishError, match="is a fifo, not a regular file; not read"):
        load_artifact(tmp_path, name)  # checked before it is opened: never blocks
