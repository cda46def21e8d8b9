"""Resolve where to publish: CLI flag > FARM_PUBLISH_* environment > matrix.yaml `publish:`.

With no bucket anywhere, the target is a local directory store (default OUT/publish) with
the same key layout, so the main command works on a fresh machine with no credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    local_dir = settings.local_dir if settings.local_dir is not None else out_dir / "publish"
    if not local_dir.is_absolute():
        local_dir = root / local_dir
    return PublishTarget(
        bucket=bucket or settings.bucket,
        prefix=normalize_prefix(prefix if prefix is not None else settings.prefix),
        region=region or settings.region,
        endpoint_url=endpoint_url or settings.endpoint_url,
        public_base_url=public_base_url or settings.public_base_url,
        local_dir=local_dir,
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
            on_retry=on_retry,
        )
    return DirectoryStore(target.local_dir, public_base_url=target.public_base_url)
