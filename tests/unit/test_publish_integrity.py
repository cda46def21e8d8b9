"""Findings 3 and 4 of the hostile-input review: a record claiming another runtime's identity,
and manifests left half-updated, reproduced against the local store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PublishError
from orchestrator.publish.manifests import manifest_key, uv_metadata_key
from orchestrator.publish.publisher import Publisher, load_artifact
from orchestrator.publish.record import cell_identity
from orchestrator.publish.store import DirectoryStore, StoredObject
from tests.publish_support import make_artifact, store_write

PREFIX = "runtimes/"


def _publisher(store: DirectoryStore) -> Publisher:
    return Publisher(store, prefix=PREFIX, progress=lambda _line: None)


def _snapshot(store: DirectoryStore) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in store.root.rglob("*.json") if ".farm-meta" not in p.parts
    }


def _edit(directory: Path, archive: str, changes: dict[str, Any]) -> None:
    path = directory / archive.replace(".tar.zst", ".json")
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record))


def test_a_record_claiming_a_published_runtime_is_refused(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    other = make_artifact(tmp_path / "other", version="3.13.4", content=b"the real 3.13.4")
    _publisher(store).publish(load_artifact(tmp_path / "other", other))
    before = _snapshot(store)

    mine = make_artifact(tmp_path / "mine", version="3.13.5", content=b"something else")
    for claim in (
        {"name": other, "version": "3.13.4", "patch": 4},
        {"version": "3.13.4", "patch": 4},
        {"stack": "debian-13"},
        {"arch": "arm64"},
    ):
        directory = tmp_path / f"mine-{len(claim)}-{sorted(claim)[0]}"
        make_artifact(directory, version="3.13.5", content=b"something else")
        _edit(directory, mine, claim)
        with pytest.raises(PublishError, match="does not describe") as raised:
            artifact = load_artifact(
                directory,
                mine,
                expect={"version": "3.13.5", "stack": "debian-12", "arch": "amd64"},
            )
            _publisher(store).publish(artifact)
        assert "\n" not in str(raised.value)
    assert _snapshot(store) == before  # the other runtime's entries are untouched


def test_cell_identity_is_what_the_cli_expects() -> None:
    from orchestrator.matrix import load_matrix

    matrix = load_matrix(Path(__file__).resolve().parents[2] / "matrix.yaml")
    cell = matrix.select(["3.13.5-debian-12-amd64"])[0]
    assert cell_identity(cell) == {
        "version": "3.13.5",
        "variant": "default",
        "stack": "debian-12",
        "arch": "amd64",
        "cpu_level": None,
    }
    free = matrix.cell("3.13.5t-debian-12-amd64")
    assert cell_identity(free) == {
        "version": "3.13.5",
        "variant": "freethreaded",
        "stack": "debian-12",
        "arch": "amd64",
        "cpu_level": None,
    }
    level = matrix.cell("3.13.5-debian-12-amd64v3")
    assert cell_identity(level) == {
        "version": "3.13.5",
        "variant": "default",
        "stack": "debian-12",
        "arch": "amd64",
        "cpu_level": "v3",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("arch", "riscv64"),
        ("stack", "../../../escape"),
        ("distro_version", "12/../../x"),
        ("version", "3.13.5; rm -rf /"),
        ("sha256", "not-a-sha"),
        ("size", "12"),
        ("built_at", "yesterday"),
        ("verification", None),
    ],
)
def test_a_bad_record_is_refused_before_any_write(tmp_path: Path, field: str, value: Any) -> None:
    store = DirectoryStore(tmp_path / "store")
    first = make_artifact(tmp_path / "a", version="3.13.4")
    _publisher(store).publish(load_artifact(tmp_path / "a", first))
    before = _snapshot(store)
    objects = sorted(p.name for p in store.root.rglob("*"))
    name = make_artifact(tmp_path / "b")
    _edit(tmp_path / "b", name, {field: value})
    with pytest.raises(PublishError, match=field) as raised:
        _publisher(store).publish(load_artifact(tmp_path / "b", name))
    assert "\n" not in str(raised.value)
    assert _snapshot(store) == before
    assert sorted(p.name for p in store.root.rglob("*")) == objects


@pytest.mark.parametrize(
    "body", [b"not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000, b'"a string"']
)
def test_a_damaged_local_record_is_one_line(tmp_path: Path, body: bytes) -> None:
    name = make_artifact(tmp_path)
    (tmp_path / name.replace(".tar.zst", ".json")).write_bytes(body)
    with pytest.raises(PublishError) as raised:
        load_artifact(tmp_path, name)
    assert "\n" not in str(raised.value) and "rebuild" in str(raised.value)


class _FailingManifest(DirectoryStore):
    """Refuses the write of manifest.json, as a store can at any moment."""

    def put(self, key: str, source: Path | bytes, **kwargs: Any) -> StoredObject:
        if key == manifest_key(PREFIX):
            raise PublishError(f"{self.describe(key)}: injected failure")
        return super().put(key, source, **kwargs)


@pytest.mark.parametrize("uv_existed", [False, True])
def test_a_failed_manifest_write_puts_uv_metadata_back(tmp_path: Path, uv_existed: bool) -> None:
    root = tmp_path / "store"
    if uv_existed:
        first = make_artifact(tmp_path / "a", version="3.13.4")
        _publisher(DirectoryStore(root)).publish(load_artifact(tmp_path / "a", first))
    store = _FailingManifest(root)
    uv_key = uv_metadata_key(PREFIX, "debian-12", "amd64")
    before = store.get(uv_key)
    manifest_before = store.get(manifest_key(PREFIX))
    name = make_artifact(tmp_path / "b")
    with pytest.raises(PublishError, match="injected failure"):
        _publisher(store).publish(load_artifact(tmp_path / "b", name))
    # Both documents are as they were: uv's restored (or removed again), the manifest untouched.
    after = store.get(uv_key)
    assert (after[0] if after else None) == (before[0] if before else None)
    assert store.get(manifest_key(PREFIX)) == manifest_before


DAMAGED_MANIFESTS = [
    b"not json",
    b"\xff\xfe",
    b"[]",
    b'{"runtimes": "a string"}',
    b'{"runtimes": [{"size": 1}]}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", DAMAGED_MANIFESTS)
def test_a_damaged_manifest_in_the_store_is_one_line(tmp_path: Path, body: bytes) -> None:
    from orchestrator.nightly import published_fingerprints
    from orchestrator.publish.publisher import check_published

    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a")
    _publisher(store).publish(load_artifact(tmp_path / "a", name))
    store_write(store, manifest_key(PREFIX), body)
    for action in (
        lambda: published_fingerprints(store, PREFIX),
        lambda: check_published(store, PREFIX, [name]),
        lambda: _publisher(store).publish(
            load_artifact(tmp_path / "b", make_artifact(tmp_path / "b", version="3.13.4"))
        ),
    ):
        with pytest.raises(PublishError, match=r"manifest\.json") as raised:
            action()
        assert "\n" not in str(raised.value) and "restore it" in str(raised.value)
    assert (store.root / manifest_key(PREFIX)).read_bytes() == body  # nothing overwritten


def test_damaged_store_metadata_is_one_line(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a")
    _publisher(store).publish(load_artifact(tmp_path / "a", name))
    meta = store.root / ".farm-meta" / f"{PREFIX}{name}.json"
    meta.write_text('{"sha256": "no etag"}')
    with pytest.raises(PublishError, match=r"metadata .* is damaged"):
        store.head(PREFIX + name)


UV_DAMAGE = {
    "entry a string": lambda doc, key: {**doc, key: "not an object"},
    "entry a list": lambda doc, key: {**doc, key: [1, 2]},
    "entry without sha256": lambda doc, key: {**doc, key: {"name": "cpython"}},
    "sha256 a number": lambda doc, key: {**doc, key: {**doc[key], "sha256": 7}},
}


@pytest.mark.parametrize("damage", UV_DAMAGE.values(), ids=UV_DAMAGE.keys())
def test_check_published_names_a_damaged_uv_entry(tmp_path: Path, damage: Any) -> None:
    from orchestrator.publish.publisher import check_published

    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a")
    _publisher(store).publish(load_artifact(tmp_path / "a", name))
    uv_path = store.root / uv_metadata_key(PREFIX, "debian-12", "amd64")
    document = json.loads(uv_path.read_text())
    (key,) = document
    store_write(
        store,
        uv_metadata_key(PREFIX, "debian-12", "amd64"),
        json.dumps(damage(document, key)).encode(),
    )
    problems = check_published(store, PREFIX, [name])
    assert len(problems) == 1 and "\n" not in problems[0]
    assert key in problems[0] and "download-metadata.json" in problems[0]


MANIFEST_ENTRY_DAMAGE = {
    "no size": lambda entry: {k: v for k, v in entry.items() if k != "size"},
    "size a string": lambda entry: {**entry, "size": "12"},
    "no sha256": lambda entry: {k: v for k, v in entry.items() if k != "sha256"},
    "no stack": lambda entry: {k: v for k, v in entry.items() if k != "stack"},
    "arch unknown": lambda entry: {**entry, "arch": "riscv64"},
    "no version": lambda entry: {k: v for k, v in entry.items() if k != "version"},
}


@pytest.mark.parametrize("damage", MANIFEST_ENTRY_DAMAGE.values(), ids=MANIFEST_ENTRY_DAMAGE.keys())
def test_check_published_names_a_damaged_manifest_entry(tmp_path: Path, damage: Any) -> None:
    from orchestrator.publish.publisher import check_published

    store = DirectoryStore(tmp_path / "store")
    name = make_artifact(tmp_path / "a")
    _publisher(store).publish(load_artifact(tmp_path / "a", name))
    manifest_path = store.root / manifest_key(PREFIX)
    manifest = json.loads(manifest_path.read_text())
    manifest["runtimes"] = [damage(r) for r in manifest["runtimes"]]
    store_write(store, manifest_key(PREFIX), json.dumps(manifest).encode())
    problems = check_published(store, PREFIX, [name])
    assert len(problems) == 1 and "\n" not in problems[0]
    assert name in problems[0] and "manifest.json" in problems[0]
