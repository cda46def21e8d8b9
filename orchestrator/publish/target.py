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
    """Overrides are the CLI values (click already folded the environment into them)."""
    # An empty --bucket must not quietly mean "the local store", nor a prefix climb out.
    if bucket is not None:
        _check_bucket(bucket)
    chosen_prefix = prefix if prefix is not None else settings.prefix
    _check_prefix(chosen_prefix)
    if endpoint_url is not None and not re.match(r"^https?://[^\s/]+(/[^\s]*)?$", endpoint_url):
        raise ConfigError(
            f"--endpoint-url {endpoint_url[:80]!r} is not an http(s) URL",
            hint="e.g. http://127.0.0.1:9000",
        )
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
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


def _check_bucket(bucket: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"bucket {bucket[:80]!r} is not a valid S3 bucket name",
            hint="3-63 lowercase letters, digits, dots or hyphens; omit --bucket (and "
            "FARM_PUBLISH_BUCKET) to publish to the local store",
        )


def _check_prefix(prefix: str) -> None:
    parts = [part for part in prefix.strip("/").split("/") if part]
    bad = [part for part in parts if not _PREFIX_PART.match(part)]
    if bad or "//" in prefix.strip("/"):
        raise ConfigError(
            f"prefix {prefix[:80]!r} has a part that is not a plain name ({(bad or ['//'])[0]!r})",
            hint="letters, digits, '.', '_' and '-' between slashes; no '..'",
        )
