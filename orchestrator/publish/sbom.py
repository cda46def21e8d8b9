"""The SBOM published beside every runtime: CycloneDX 1.6 JSON, written with cyclonedx-python-lib
and validated against the official schema before it is kept.

It names the runtime archive (its sha256), CPython (version, source tarball sha256 and what
proved it), the third-party code CPython's tarball vendors and this build ships (expat,
mpdecimal, mimalloc, HACL*, libb2, macholib, the pip wheel), and the stack's packages as
installed in the run image (deb purls with versions), each marked as linked by the runtime
or installed by the stack.

This module is cheap to import (names and suffixes, for publishing and planning); the
CycloneDX library is loaded by build_sbom and validate_sbom, the first time one is called
(orchestrator/publish/cyclonedx_sbom.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.sources.bundled import BundledComponent

SBOM_SUFFIX = ".sbom.cdx.json"
SBOM_FORMAT = "CycloneDX 1.6 JSON"


def sbom_name(archive_name: str) -> str:
    return archive_name.removesuffix(".tar.zst") + SBOM_SUFFIX


def build_sbom(
    record: dict[str, Any], *, bundled: Sequence[BundledComponent], ships_pip_wheel: bool
) -> str:
    """The SBOM for the archive `record` describes (its metadata, after verification)."""
    from orchestrator.publish import cyclonedx_sbom

    return cyclonedx_sbom.build_sbom(record, bundled=bundled, ships_pip_wheel=ships_pip_wheel)


def validate_sbom(text: str, *, what: str) -> None:
    """Check `text` against the CycloneDX 1.6 JSON schema; PackagingError naming the problem."""
    from orchestrator.publish import cyclonedx_sbom

    cyclonedx_sbom.validate_sbom(text, what=what)
