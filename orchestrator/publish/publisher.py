"""Publish built artifacts immutably: archive, then sidecars, then manifests, in that order.

Per cell:
1. check the local artifact set is complete and consistent (archive, .sha256, .json agree);
2. upload the archive create-only; if the key exists, an identical archive (same sha256) is
   a no-op and a different one is an error unless `force` (then it is replaced with If-Match
   on the ETag we saw, and the replacement is recorded in the published .json);
3. upload `.sha256` and `.json` the same way;
4. read all three back (size and sha256) before anything references them;
5. merge the entry into manifest.json, then into the stack/arch's uv download-metadata.json,
   each with If-Match on the ETag read (create-only when absent), re-reading on conflict.
A failure at any step raises PublishError before the manifests are touched, so a manifest
never references a missing or partial object. Before the first write, every object the cell
touches must have a record that describes it, and both manifests must read back whole with
every entry valid: otherwise one line says what is wrong and nothing is written.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.archive import sha256_of
from orchestrator.errors import FileRefused, PublishError
from orchestrator.fsutil import check_regular, read_regular
from orchestrator.publish.documents import (
    named_runtimes,
    parse_document,
    valid_runtimes,
    valid_uv_entries,
)
from orchestrator.publish.manifests import (
    REPAIR_HINT,
    dumps,
    manifest_entry,
    manifest_key,
    merge_manifest,
    merge_uv_metadata,
    normalize_prefix,
    uv_entry,
    uv_key,
    uv_metadata_key,
)
from orchestrator.publish.record import manifest_entry_damage, uv_entry_damage, validate_record
from orchestrator.publish.sbom import SBOM_SUFFIX, sbom_name
from orchestrator.publish.store import (
    MAX_DOCUMENT_BYTES,
    ObjectExists,
    ObjectStore,
    PreconditionFailed,
    StoredObject,
    StoreRecordsError,
    sha256_hex,
)

Action = Literal["uploaded", "unchanged", "replaced", "dry-run"]
Progress = Callable[[str], None]
CONTENT_TYPES = {
    ".tar.zst": "application/zstd",
    ".sha256": "text/plain; charset=utf-8",
    ".json": "application/json",
    SBOM_SUFFIX: "application/vnd.cyclonedx+json",
}
MAX_MANIFEST_ATTEMPTS = 30
# Manifests change in place: clients (uv caches download metadata by HTTP rules) must
# revalidate them (cheap with the ETag) rather than keep a copy, or a new build reaches
# them late. Without this header uv would keep a copy for 10 minutes.
MANIFEST_CACHE_CONTROL = "no-cache"


@dataclass(frozen=True, kw_only=True)
class LocalArtifact:
    """One cell's files in OUT/artifacts, checked to agree with each other."""

    archive: Path
    sha256_file: Path
    metadata_file: Path
    sbom_file: Path
    record: dict[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.record["sha256"])


@dataclass(frozen=True, kw_only=True)
class PublishOutcome:
    name: str
    action: Action
    url: str
    keys: list[str] = field(default_factory=list)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_artifact(
    artifacts_dir: Path, archive_name: str, *, expect: Mapping[str, str | None] | None = None
) -> LocalArtifact:
    """The cell's local artifact set, checked complete, consistent and describing
    `archive_name`; `expect` (e.g. the cell's version, stack and arch) must match the record."""
    archive = artifacts_dir / archive_name
    stem = archive_name.removesuffix(".tar.zst")
    sha256_file = artifacts_dir / f"{archive_name}.sha256"
    metadata_file = artifacts_dir / f"{stem}.json"
    sbom_file = artifacts_dir / sbom_name(archive_name)
    missing = []
    for path in (archive, sha256_file, metadata_file, sbom_file):
        try:
            check_regular(path)  # a fifo or a device is not an artifact, and is never read
        except FileRefused as exc:
            if not exc.missing:
                raise PublishError(str(exc), hint=_REBUILD) from None
            missing.append(path.name)
    if missing:
        raise PublishError(
            f"{archive_name}: incomplete artifact in {artifacts_dir} "
            f"(missing {', '.join(missing)})",
            hint="build the cell first: `orchestrator build CELL`",
        )
    record = validate_record(
        _read_json(metadata_file), archive_name=archive_name, where=str(metadata_file)
    )
    wrong = {k: (record.get(k), v) for k, v in (expect or {}).items() if record.get(k) != v}
    if wrong:
        said = ", ".join(
            f"{k} {have!r} (the cell's is {want!r})" for k, (have, want) in wrong.items()
        )
        raise PublishError(
            f"{metadata_file} does not describe this cell: {said}",
            hint="publish a record only beside the archive it was built with; rebuild the cell",
        )
    try:
        actual = sha256_of(archive)
    except FileRefused as exc:
        raise PublishError(str(exc), hint=_REBUILD) from None
    try:
        sums = read_regular(sha256_file, limit=_MAX_SHA256_FILE).decode("utf-8").split()
    except FileRefused as exc:
        raise PublishError(str(exc), hint=_REBUILD) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise PublishError(f"{sha256_file}: unreadable ({exc})", hint=_REBUILD) from None
    recorded = sums[0] if sums else ""
    if not (actual == recorded == record.get("sha256")) or archive.stat().st_size != record.get(
        "size"
    ):
        raise PublishError(
            f"{archive_name}: archive, .sha256 and .json disagree (archive sha256 {actual})",
            hint="rebuild the cell; nothing was published",
        )
    if record["verification"]["ok"] is not True:
        raise PublishError(
            f"{archive_name}: its verification failed; refusing to publish",
            hint="rebuild it, or run `orchestrator verify CELL` and see the cell's log",
        )
    try:
        sbom_sha256 = sha256_of(sbom_file, limit=MAX_SIDECAR_BYTES)
    except FileRefused as exc:
        raise PublishError(str(exc), hint=_REBUILD) from None
    if record["sbom"]["sha256"] != sbom_sha256:
        raise PublishError(
            f"{archive_name}: {sbom_file.name} is not the SBOM its .json names",
            hint="rebuild the cell; nothing was published",
        )
    return LocalArtifact(
        archive=archive,
        sha256_file=sha256_file,
        metadata_file=metadata_file,
        sbom_file=sbom_file,
        record=record,
    )


_REBUILD = "rebuild the cell; nothing was published"
_MAX_SHA256_FILE = 64 * 1024  # "<64 hex>  <name>\n"
# A record is ~10 KB, an SBOM ~100 KB: what the artifacts directory holds is read through
# fsutil.read_regular (a regular file, at most this much).
MAX_SIDECAR_BYTES = 64 * 1024 * 1024


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_regular(path, limit=MAX_DOCUMENT_BYTES).decode("utf-8"))
    except FileRefused as exc:
        raise PublishError(str(exc), hint=_REBUILD) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PublishError(f"{path}: not valid UTF-8 JSON ({exc})", hint=_REBUILD) from None
    except OSError as exc:
        raise PublishError(f"{path}: unreadable ({exc.strerror or exc})", hint=_REBUILD) from None


class Publisher:
    def __init__(self, store: ObjectStore, *, prefix: str = "", progress: Progress) -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)
        self.progress = progress

    def keys_for(self, artifact: LocalArtifact) -> list[str]:
        record = artifact.record
        return [
            self.prefix + artifact.archive.name,
            self.prefix + artifact.sha256_file.name,
            self.prefix + artifact.sbom_file.name,
            self.prefix + artifact.metadata_file.name,
            manifest_key(self.prefix),
            uv_metadata_key(self.prefix, record["stack"], record["arch"]),
        ]

    def publish(
        self, artifact: LocalArtifact, *, force: bool = False, dry_run: bool = False
    ) -> PublishOutcome:
        archive_key, sha_key, sbom_key, json_key, *_ = keys = self.keys_for(artifact)
        url = self.store.public_url(archive_key)

        # Everything the manifests will say is computed (so checked) before the first write:
        # a record they cannot take stops here, with nothing uploaded.
        published_at = utc_now()
        sbom_url = self.store.public_url(sbom_key)
        entry = manifest_entry(
            artifact.record,
            url=url,
            metadata_url=self.store.public_url(json_key),
            sbom_url=sbom_url,
            published_at=published_at,
        )
        uv_doc_key = uv_metadata_key(self.prefix, artifact.record["stack"], artifact.record["arch"])
        uv_name, uv_doc_entry = (
            uv_key(artifact.record),
            uv_entry(artifact.record, url=url, sbom_url=sbom_url),
        )
        # And what is published already must be readable as it is: the cell's objects with
        # records that describe them, both documents whole and valid. Else one line, and
        # nothing written (a publish must not add an archive it cannot list).
        for key in (archive_key, sha_key, sbom_key, json_key):
            self.store.head(key)
        for key in (uv_doc_key, manifest_key(self.prefix)):
            self._read_document(key)
        if dry_run:
            for key in keys:
                self.progress(f"would write {self.store.describe(key)}")
            return PublishOutcome(name=artifact.archive.name, action="dry-run", url=url, keys=keys)

        action, replaced = self._put_archive(archive_key, artifact, force=force)
        sha_body = read_regular(artifact.sha256_file, limit=MAX_SIDECAR_BYTES)
        self._put_sidecar(sha_key, sha_body, overwrite=action == "replaced")
        sbom_body = read_regular(artifact.sbom_file, limit=MAX_SIDECAR_BYTES)
        self._put_sidecar(sbom_key, sbom_body, overwrite=action == "replaced")
        published_record = {
            **artifact.record,
            "published": {"url": url, "key": archive_key, "published_at": published_at},
        }
        if replaced is not None:
            published_record["published"]["replaced"] = replaced
        self._put_sidecar(json_key, dumps(published_record), overwrite=action == "replaced")

        # Read-back before any manifest may point at these objects.
        self.store.verify(archive_key, artifact.archive, sha256=artifact.sha256)
        self.store.verify(sha_key, sha_body, sha256=sha256_hex(sha_body))
        if action == "unchanged":
            # The SBOM published with these bytes stays (this build's differs in its time).
            if self.store.head(sbom_key) is None:
                raise PublishError(f"read-back: {self.store.describe(sbom_key)} is missing")
        else:
            self.store.verify(sbom_key, sbom_body, sha256=sha256_hex(sbom_body))
        self.progress(f"verified {self.store.describe(archive_key)} by read-back")

        # uv's file first, manifest.json last: the manifest is what nightly and check-manifest
        # trust, so it only changes once uv's has. If writing it fails, uv's file is put
        # back as it was (If-Match on what we wrote: a later publisher's update is kept).
        # Either way every URL in either file names an object that was read back above.
        uv_undo = self._update_json(
            uv_doc_key,
            lambda current: _keep_uv_build(
                current, uv_name, uv_doc_entry, unchanged=action == "unchanged"
            ),
        )
        try:
            self._update_json(
                manifest_key(self.prefix),
                lambda current: _keep_published_at(current, entry, unchanged=action == "unchanged"),
            )
        except BaseException:
            if uv_undo is not None:
                self._undo(uv_undo)
            raise
        return PublishOutcome(name=artifact.archive.name, action=action, url=url, keys=keys)

    def _put_archive(
        self, key: str, artifact: LocalArtifact, *, force: bool
    ) -> tuple[Action, dict[str, str] | None]:
        content_type = CONTENT_TYPES[".tar.zst"]
        try:
            self.store.put(
                key, artifact.archive, sha256=artifact.sha256, content_type=content_type,
                create_only=True,
            )  # fmt: skip
            self.progress(f"uploaded {self.store.describe(key)}")
            return "uploaded", None
        except ObjectExists:
            pass
        existing = self._head_existing(key)
        if existing.sha256 == artifact.sha256:
            self.progress(f"{self.store.describe(key)} already published (same sha256)")
            return "unchanged", None
        if not force:
            raise PublishError(
                f"{self.store.describe(key)} exists with sha256 {existing.sha256}, "
                f"the local archive is {artifact.sha256}",
                hint="published runtimes are immutable; use --force to replace it",
            )
        try:
            self.store.put(
                key, artifact.archive, sha256=artifact.sha256, content_type=content_type,
                if_match=existing.etag,
            )  # fmt: skip
        except PreconditionFailed:
            raise PublishError(
                f"{self.store.describe(key)} changed while it was being replaced",
                hint="another publisher is writing it; run again",
            ) from None
        self.progress(f"replaced {self.store.describe(key)} (--force)")
        return "replaced", {"sha256": existing.sha256 or "", "replaced_at": utc_now()}

    def _undo(self, undo: _Undo) -> None:
        """Best effort: the error that brought us here is the one to report."""
        try:
            if undo.previous is None:
                self.store.delete(undo.key, if_match=undo.etag)
            else:
                self.store.put(
                    undo.key, undo.previous, sha256=sha256_hex(undo.previous),
                    content_type=CONTENT_TYPES[".json"], if_match=undo.etag,
                    cache_control=MANIFEST_CACHE_CONTROL,
                )  # fmt: skip
            self.progress(f"put back {self.store.describe(undo.key)} as it was")
        except PublishError as exc:
            self.progress(f"could not put back {self.store.describe(undo.key)}: {exc}")

    def _head_existing(self, key: str) -> StoredObject:
        existing = self.store.head(key)
        if existing is None:  # deleted between our PUT and HEAD: report, don't guess
            raise PublishError(f"{self.store.describe(key)} vanished during publish; run again")
        return existing

    def _read_document(self, key: str) -> tuple[tuple[bytes, str] | None, dict[str, Any] | None]:
        """(what the store holds, the document with every entry validated)."""
        found = self.store.get(key)
        if found is None:
            return None, None
        where = self.store.describe(key)
        document = parse_document(where, found[0])
        if key == manifest_key(self.prefix):
            valid_runtimes(where, document)
        else:
            valid_uv_entries(where, document)
        return found, document

    def _put_sidecar(self, key: str, body: bytes, *, overwrite: bool) -> None:
        sha = sha256_hex(body)
        suffix = next(s for s in (SBOM_SUFFIX, ".json", ".sha256") if key.endswith(s))
        content_type = CONTENT_TYPES[suffix]
        try:
            self.store.put(key, body, sha256=sha, content_type=content_type, create_only=True)
            return
        except ObjectExists:
            pass
        existing = self._head_existing(key)
        if not overwrite:
            # The archive is the published one; its sidecars from that publish stay.
            return
        if existing.sha256 != sha:
            self.store.put(key, body, sha256=sha, content_type=content_type,
                           if_match=existing.etag)  # fmt: skip

    def _update_json(
        self, key: str, merge: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> _Undo | None:
        """Read, merge, write with If-Match (create-only when absent); on a lost race,
        re-read and merge again, so concurrent publishers never drop each other's entries.
        Returns how to put the document back (None when nothing changed)."""
        for attempt in range(1, MAX_MANIFEST_ATTEMPTS + 1):
            found, current = self._read_document(key)
            updated = merge(current)
            if updated == current:
                return None
            body = dumps(updated)
            if len(body) > MAX_DOCUMENT_BYTES:
                # Written, it could never be read back (stores hand out at most this much).
                raise PublishError(
                    f"{self.store.describe(key)} would grow to {len(body)} bytes, over the "
                    f"{MAX_DOCUMENT_BYTES} byte limit for a farm document; nothing was changed",
                    hint="publish to a new --prefix, or remove runtimes no longer served",
                )
            try:
                written = self.store.put(
                    key, body, sha256=sha256_hex(body), content_type=CONTENT_TYPES[".json"],
                    if_match=found[1] if found else None, create_only=found is None,
                    cache_control=MANIFEST_CACHE_CONTROL,
                )  # fmt: skip
                self.progress(f"updated {self.store.describe(key)}")
                return _Undo(key=key, previous=found[0] if found else None, etag=written.etag)
            except (PreconditionFailed, ObjectExists):
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))
        raise PublishError(
            f"{self.store.describe(key)}: gave up after {MAX_MANIFEST_ATTEMPTS} conflicting "
            "concurrent updates",
            hint="the runtimes are uploaded; run publish again to add them to the manifest",
        )


@dataclass(frozen=True, kw_only=True)
class _Undo:
    key: str
    previous: bytes | None  # None: the document did not exist
    etag: str  # what we wrote


def _keep_published_at(
    current: dict[str, Any] | None, entry: dict[str, Any], *, unchanged: bool
) -> dict[str, Any]:
    """An unchanged re-publish keeps the entry's original published_at and build: the bytes
    clients have are the bytes published, so nothing may read as an upgrade."""
    if unchanged and current:
        for existing in current.get("runtimes", []):
            if existing.get("name") == entry["name"] and existing.get("sha256") == entry["sha256"]:
                kept = {k: existing[k] for k in ("published_at", "build") if k in existing}
                entry = {**entry, **kept}
    return merge_manifest(current, entry)


def _keep_uv_build(
    current: dict[str, Any] | None, key: str, entry: dict[str, Any], *, unchanged: bool
) -> dict[str, Any]:
    existing = (current or {}).get(key)
    if (
        unchanged
        and existing
        and existing.get("sha256") == entry["sha256"]
        and existing.get("build")
    ):
        entry = {**entry, "build": existing["build"]}
    return merge_uv_metadata(current, key, entry)


def check_published(store: ObjectStore, prefix: str, archive_names: list[str]) -> list[str]:
    """Problems with what is published for `archive_names` (empty list: all good).

    Every name must be in manifest.json with a valid entry; its archive must exist with the
    size and sha256 the manifest states; its .sha256, .json and SBOM must exist; every one of
    them must have a record that describes it; and the stack/arch uv metadata must list it, with
    a valid entry, at the same sha256.
    """
    prefix = normalize_prefix(prefix)
    found = store.get(manifest_key(prefix))
    if found is None:
        return [f"{store.describe(manifest_key(prefix))} does not exist"]
    where = store.describe(manifest_key(prefix))
    entries = {r["name"]: r for r in named_runtimes(where, parse_document(where, found[0]))}
    uv_docs: dict[str, dict[str, Any]] = {}
    problems: list[str] = []

    def head(key: str) -> StoredObject | str | None:
        try:
            return store.head(key)
        except StoreRecordsError as exc:
            return str(exc)

    for name in archive_names:
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{name}: not in the manifest")
            continue
        if damage := manifest_entry_damage(entry):
            problems.append(f"{name}: its entry in {where}: {damage}; {REPAIR_HINT}")
            continue
        key = prefix + name
        archive = head(key)
        if isinstance(archive, str):
            problems.append(f"{name}: {archive}")
            continue
        if archive is None:
            problems.append(f"{name}: manifest entry but no object at {store.describe(key)}")
            continue
        if archive.size != entry["size"] or archive.sha256 != entry["sha256"]:
            problems.append(f"{name}: object differs from the manifest (size/sha256)")
        stem = name.removesuffix(".tar.zst")
        for sidecar in (f"{name}.sha256", f"{stem}.json", sbom_name(name)):
            found_sidecar = head(prefix + sidecar)
            if found_sidecar is None:
                problems.append(f"{name}: missing {sidecar}")
            elif isinstance(found_sidecar, str):
                problems.append(f"{name}: {found_sidecar}")
        uv_key_name = uv_metadata_key(prefix, entry["stack"], entry["arch"])
        uv_where = store.describe(uv_key_name)
        if uv_key_name not in uv_docs:
            uv_found = store.get(uv_key_name)
            uv_docs[uv_key_name] = parse_document(uv_where, uv_found[0]) if uv_found else {}
        uv_name = uv_key(entry)  # the variant's and level's own key (+freethreaded, x86_64_v3)
        uv_doc_entry = uv_docs[uv_key_name].get(uv_name)
        if uv_doc_entry is None:
            problems.append(f"{name}: {uv_where} does not list {uv_name}")
        elif damage := uv_entry_damage(uv_name, uv_doc_entry):
            # One damaged entry is a line naming it, not an AttributeError for every cell.
            problems.append(f"{name}: {uv_where} entry {uv_name}: {damage}; {REPAIR_HINT}")
        elif uv_doc_entry["sha256"] != entry["sha256"]:
            problems.append(f"{name}: {uv_where} lists {uv_name} with another sha256")
    return problems
