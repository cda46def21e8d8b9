"""Resolve where to publish: CLI flag > FARM_PUBLISH_* environment > matrix.yaml `publish:`.

With no bucket anywhere, the target is a local directory store (default OUT/publish) with
the same key layout, so the main command works on a fresh machine with no credentials.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.matrix import PublishSettings
from orchestrator.matrix.schema import check_url
from orchestrator.publish.manifests import normalize_prefix
from orchestrator.publish.store import DirectoryStore, ObjectStore


@dataclass(frozen=True, kw_only=True)
class PublishTarget:
    bucket: str | None
    prefix: str
    region: str | None
    endpoint_url: str | None
    public_base_url: str | None
    local_dir: Path
    deadline: float  # seconds per S3 operation, retries included (publish.deadline_seconds)

    def describe(self) -> str:
        if self.bucket:
            where = f" via {self.endpoint_url}" if self.endpoint_url else ""
            return f"s3://{self.bucket}/{self.prefix}{where}"
        return f"local store {self.local_dir}/{self.prefix} (no bucket configured)"


def resolve_target(
    settings: PublishSettings,
    *,
    root: Path,
    out_dir: Path,
    bucket: str | None = None,
    prefix: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    public_base_url: str | None = None,
) -> PublishTarget:
    """Overrides are the CLI values (click already folded the environment into them). Every
    value is checked whatever its source (flag, FARM_PUBLISH_*, matrix.yaml), before boto3
    sees it: botocore raises its own exceptions for a bad region or URL."""
    # An empty --bucket must not quietly mean "the local store", nor a prefix climb out.
    if bucket is not None:
        _check_bucket(bucket)
    elif settings.bucket is not None:
        _check_bucket(settings.bucket)
    chosen_prefix = prefix if prefix is not None else settings.prefix
    _check_prefix(chosen_prefix)
    for flag, value in (
        ("--endpoint-url", endpoint_url or settings.endpoint_url),
        ("--public-base-url", public_base_url or settings.public_base_url),
    ):
        if value is not None:
            _check_url(flag, value)
    if (region or settings.region) is not None:
        _check_region(region if region is not None else str(settings.region))
    local_dir = settings.local_dir if settings.local_dir is not None else out_dir / "publish"
    if not local_dir.is_absolute():
        local_dir = root / local_dir
    return PublishTarget(
        bucket=bucket or settings.bucket,
        prefix=normalize_prefix(chosen_prefix),
        region=region or settings.region,
        endpoint_url=endpoint_url or settings.endpoint_url,
        public_base_url=public_base_url or settings.public_base_url,
        local_dir=local_dir,
        deadline=settings.deadline_seconds,
    )


def open_store(
    target: PublishTarget, *, on_retry: Callable[[str], None] | None = None
) -> ObjectStore:
    if target.bucket:
        from orchestrator.publish.s3store import (
            S3Store,  # boto3 is slow to import; only when needed
        )

        return S3Store(
            bucket=target.bucket,
            region=target.region,
            endpoint_url=target.endpoint_url,
            public_base_url=target.public_base_url,
            deadline=target.deadline,
            on_retry=on_retry,
        )
    return DirectoryStore(target.local_dir, public_base_url=target.public_base_url)


# S3's bucket naming rules (3-63 characters; lowercase letters, digits, dots, hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def _check_bucket(bucket: str) -> None:
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(
            f"bucket {bucket[:80]!r} is not a valid S3 bucket name",
            hint="3-63 lowercase letters, digits, dots or hyphens; omit --bucket (and "
            "FARM_PUBLISH_BUCKET) to publish to the local store",
        )


# What botocore accepts as a region (a DNS label, not all digits), matched whole: AWS's
# us-east-1, and what S3-compatible servers call theirs (auto, default, garage).
_REGION = re.compile(r"(?![0-9]+\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _check_region(region: str) -> None:
    if not _REGION.fullmatch(region):
        raise ConfigError(
            f"region {region[:80]!r} is not a region name",
            hint="letters, digits and hyphens, like us-east-1; from --region, FARM_PUBLISH_REGION "
            "or matrix.yaml publish.region",
        )


def _check_url(flag: str, url: str) -> None:
    # Clients may read a store served from disk (file://); S3 endpoints are http(s).
    schemes = ("https", "http", "file") if flag == "--public-base-url" else ("https", "http")
    try:
        check_url(url, schemes=schemes)
    except ValueError as exc:
        raise ConfigError(f"{flag} {exc}", hint="e.g. http://127.0.0.1:9000") from None


def _check_prefix(prefix: str) -> None:
    parts = [part for part in prefix.strip("/").split("/") if part]
    bad = [part for part in parts if not _PREFIX_PART.fullmatch(part)]
    if bad or "//" in prefix.strip("/"):
        raise ConfigError(
            f"prefix {prefix[:80]!r} has a part that is not a plain name ({(bad or ['//'])[0]!r})",
            hint="letters, digits, '.', '_' and '-' between slashes; no '..'",
        )
