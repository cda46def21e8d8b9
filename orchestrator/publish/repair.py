"""Rebuild a store's records from what is published: `orchestrator check-manifest --repair`.

A store keeps a record per object (local: `.farm-meta/KEY.json`; S3: the object's `sha256`
metadata). Copying a store without them (`rsync dir/*`, `aws s3 sync`), deleting them or
restoring one object alone leaves objects the store refuses to touch (publish/store.py).
This walks the farm's keys under the prefix and, for each whose record is missing or does not
describe it, hashes the bytes and writes the record that does, unless the bytes contradict
what is published about them: an archive must match its `.sha256` and its manifest.json entry
(sha256 and size). One that does not is named and left without a record, so publishing keeps
refusing it until someone decides which is right. Records of objects that are gone are
dropped. Nothing but records is written (S3: the same bytes again, with their record).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.errors import PublishError
from orchestrator.publish.documents import runtime_entries
from orchestrator.publish.manifests import MANIFEST_NAME, UV_METADATA_NAME, normalize_prefix
from orchestrator.publish.publisher import CONTENT_TYPES, MANIFEST_CACHE_CONTROL
from orchestrator.publish.sbom import SBOM_SUFFIX
from orchestrator.publish.store import MAX_DOCUMENT_BYTES, ObjectStore

# The keys publishing writes, relative to the prefix.
FARM_KEY = re.compile(
    r"python-[A-Za-z0-9._+-]{1,200}"
    rf"|{re.escape(MANIFEST_NAME)}"
    rf"|[a-z0-9][a-z0-9.-]{{0,39}}/[a-z0-9]{{1,20}}/{re.escape(UV_METADATA_NAME)}"
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_SHA256_FILE = 64 * 1024


@dataclass(kw_only=True)
class RepairReport:
    keys: int = 0  # the farm's objects found under the prefix
    rebuilt: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # records whose object is gone
    problems: list[str] = field(default_factory=list)  # objects left without a record


@dataclass(frozen=True, kw_only=True)
class _Claim:
    by: str  # where it is said, for messages
    sha256: str
    size: int | None


def content_type_for(key: str) -> tuple[str, str | None]:
    """(Content-Type, Cache-Control) publishing gives `key`."""
    name = key.rsplit("/", 1)[-1]
    if name in (MANIFEST_NAME, UV_METADATA_NAME):
        return CONTENT_TYPES[".json"], MANIFEST_CACHE_CONTROL
    for suffix in (SBOM_SUFFIX, ".tar.zst", ".sha256", ".json"):
        if name.endswith(suffix):
            return CONTENT_TYPES[suffix], None
    return "application/octet-stream", None


def repair_records(
    store: ObjectStore, prefix: str, *, progress: Callable[[str], None], dry_run: bool = False
) -> RepairReport:
    """dry_run: say which records are wrong, write nothing (the bytes are not judged)."""
    prefix = normalize_prefix(prefix)
    report = RepairReport()
    with store.maintenance():
        keys = [k for k in store.list_keys(prefix) if FARM_KEY.fullmatch(k[len(prefix) :])]
        report.keys = len(keys)
        claims = _published_claims(store, prefix, keys, report.problems)
        for key in keys:
            try:
                wrong = store.record_problem(key)
                if wrong is None:
                    continue
                if dry_run:
                    report.rebuilt.append(key)
                    progress(f"would rebuild the record of {store.describe(key)}, which {wrong}")
                    continue
                content_type, cache_control = content_type_for(key)
                refused = store.rebuild_record(
                    key,
                    content_type=content_type,
                    cache_control=cache_control,
                    judge=_judge(store, key, claims.get(key, [])),
                )
            except PublishError as exc:
                report.problems.append(f"{store.describe(key)}: {exc}")
                continue
            if refused is not None:
                report.problems.append(refused)
            else:
                report.rebuilt.append(key)
                progress(f"rebuilt the record of {store.describe(key)}, which {wrong}")
        report.dropped = [] if dry_run else store.drop_orphan_records(prefix)
        for key in report.dropped:
            progress(f"dropped the record of {store.describe(key)} (no such object)")
    return report


def _judge(store: ObjectStore, key: str, claims: list[_Claim]) -> Callable[[int, str], str | None]:
    def judge(size: int, sha256: str) -> str | None:
        disagree = [
            f"{claim.by} says sha256 {claim.sha256}"
            + (f", {claim.size} bytes" if claim.size is not None else "")
            for claim in claims
            if claim.sha256 != sha256 or (claim.size is not None and claim.size != size)
        ]
        if not disagree:
            return None
        return (
            f"{store.describe(key)}: its bytes (sha256 {sha256}, {size} bytes) are not what is "
            f"published about it ({'; '.join(disagree)}); left without a record, so publishing "
            "stops at it: remove it and publish the cell again (or restore the right bytes)"
        )

    return judge


def _published_claims(
    store: ObjectStore, prefix: str, keys: list[str], problems: list[str]
) -> dict[str, list[_Claim]]:
    """What the manifest and the `.sha256` files say each archive is (read without records:
    those are what is being rebuilt)."""
    claims: dict[str, list[_Claim]] = {}
    manifest = prefix + MANIFEST_NAME
    if manifest in keys:
        where = store.describe(manifest)
        try:
            body = store.read_unrecorded(manifest, max_bytes=MAX_DOCUMENT_BYTES)
            entries = runtime_entries(where, body) if body is not None else []
        except PublishError as exc:
            problems.append(f"{exc} (its archives were checked against their .sha256 only)")
            entries = []
        for entry in entries:
            claims.setdefault(prefix + entry["name"], []).append(
                _Claim(by=where, sha256=entry["sha256"], size=entry["size"])
            )
    for key in keys:
        if not key.endswith(".tar.zst.sha256"):
            continue
        try:
            body = store.read_unrecorded(key, max_bytes=_MAX_SHA256_FILE) or b""
            first = body.decode("utf-8").split()[:1]
        except (PublishError, UnicodeDecodeError) as exc:
            problems.append(f"{store.describe(key)}: unreadable ({exc})")
            continue
        if not first or not _SHA256.fullmatch(first[0]):
            problems.append(f"{store.describe(key)}: not a sha256 line; its archive is unchecked")
            continue
        archive = key.removesuffix(".sha256")
        claims.setdefault(archive, []).append(
            _Claim(by=store.describe(key), sha256=first[0], size=None)
        )
    return claims
