"""The schema of a built cell's `.json` record, as publishing reads it back.

The record is a local file anyone can edit; what publishing takes from it becomes manifest
entries, uv keys and object keys. So it is validated before anything is written: types,
character rules for every value that ends up in a key or URL, and its identity: the record
must describe the archive it sits beside (name, version, distro, arch agree with the archive
file name the cell gives, and with each other).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from orchestrator.errors import PublishError
from orchestrator.matrix import Cell, CpuLevel, VariantName
from orchestrator.publish.manifests import UV_ARCH

_NAME = r"^[a-z0-9][a-z0-9.-]{0,39}$"
Version = Annotated[
    str, StringConstraints(pattern=r"^3\.[0-9]{1,3}\.[0-9]{1,3}((a|b|rc)[0-9]{1,3})?$")
]
Name = Annotated[str, StringConstraints(pattern=_NAME)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Open(BaseModel):
    # The record holds much more (sizes, flags, images) that publishing passes on untouched.
    model_config = ConfigDict(extra="allow", strict=True)


class Verification(_Open):
    ok: bool


class SourceRecord(_Open):
    filename: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")]
    sha256: Sha256


class SbomRecord(_Open):
    file: Annotated[str, StringConstraints(pattern=r"^python-[A-Za-z0-9._-]{1,200}$")]
    sha256: Sha256


class ArtifactRecord(_Open):
    name: Annotated[str, StringConstraints(pattern=r"^python-[a-z0-9.-]{1,120}\.tar\.zst$")]
    version: Version
    major: Literal[3]
    minor: Annotated[int, Field(ge=0, le=999)]
    patch: Annotated[int, Field(ge=0, le=999)]
    prerelease: Annotated[str, StringConstraints(pattern=r"^((a|b|rc)[0-9]{1,3})?$")] = ""
    # Records from before variants have none: the default.
    variant: Literal[tuple(v.value for v in VariantName)] = "default"  # type: ignore[valid-type]
    stack: Name
    distro: Name
    distro_version: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9.]{0,15}$")]
    arch: Literal[tuple(UV_ARCH)]  # type: ignore[valid-type]
    # Records from before CPU levels, and baseline runtimes, have none.
    cpu_level: Literal[tuple(v.value for v in CpuLevel)] | None = None  # type: ignore[valid-type]
    profile: Name
    sha256: Sha256
    size: Annotated[int, Field(gt=0)]
    built_at: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")]
    source: SourceRecord
    verification: Verification
    sbom: SbomRecord
    fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


def cell_identity(cell: Cell) -> dict[str, str | None]:
    """What a cell's record must say about itself."""
    return {
        "version": cell.version,
        "variant": cell.variant.value,
        "stack": cell.stack_name,
        "arch": cell.arch.value,
        "cpu_level": cell.cpu_level.value if cell.cpu_level else None,
    }


def validate_record(raw: Any, *, archive_name: str, where: str) -> dict[str, Any]:
    """The record if it is well-formed and describes `archive_name`; PublishError otherwise."""
    if not isinstance(raw, dict):
        raise PublishError(f"{where}: not a JSON object", hint=_REBUILD)
    try:
        record = ArtifactRecord.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "record"
        raise PublishError(f"{where}: {field}: {first['msg']}", hint=_REBUILD) from None
    label = f"{record.version}{VariantName(record.variant).abi_suffix}"
    arch = f"{record.arch}{record.cpu_level or ''}"
    expected = f"python-{label}-{record.distro}-{record.distro_version}-{arch}"
    problems = []
    if record.name != archive_name:
        problems.append(f"name {record.name} is not {archive_name}")
    if f"{expected}.tar.zst" != archive_name:
        problems.append(f"version/variant/distro/arch say {expected}.tar.zst")
    numbers = f"{record.major}.{record.minor}.{record.patch}{record.prerelease}"
    if numbers != record.version:
        problems.append(f"major/minor/patch say {numbers}, version says {record.version}")
    if problems:
        raise PublishError(
            f"{where} does not describe {archive_name}: {'; '.join(problems)}",
            hint="publish a record only beside the archive it was built with; rebuild the cell",
        )
    return {**raw, "variant": record.variant, "cpu_level": record.cpu_level}


_REBUILD = "the cell's .json is damaged or edited; rebuild the cell, nothing was published"
