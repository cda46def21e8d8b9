"""The schema of a built cell's `.json` record, as publishing reads it back.

The record is a local file anyone can edit; what publishing takes from it becomes manifest
entries, uv keys and object keys. So it is validated before anything is written: types,
character rules for every value that ends up in a key or URL, and its identity: the record
must describe the archive it sits beside (name, version, distro, arch agree with the archive
file name the cell gives, and with each other).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from orchestrator.errors import PublishError
from orchestrator.matrix import Cell, CpuLevel, VariantName
from orchestrator.publish.manifests import UV_ARCH, UV_ARCH_VARIANT

_NAME = r"^[a-z0-9][a-z0-9.-]{0,39}$"
Version = Annotated[
    str, StringConstraints(pattern=r"^3\.[0-9]{1,3}\.[0-9]{1,3}((a|b|rc)[0-9]{1,3})?$")
]
Name = Annotated[str, StringConstraints(pattern=_NAME)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Open(BaseModel):
    # The record holds much more (sizes, flags, images) that publishing passes on untouched.
    model_config = ConfigDict(extra="allow", strict=True)


class SkippedCheck(_Open):
    check: str
    required: bool
    allowed: bool


class Verification(_Open):
    ok: bool
    # Records from before skips were recorded have none.
    skipped: list[SkippedCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def _required_checks_ran(self) -> Self:
        """A skipped check proves nothing: a record claiming ok with a required check skipped
        and not allowed (an edited record) is not publishable."""
        bad = [s.check for s in self.skipped if s.required and not s.allowed]
        if self.ok and bad:
            raise ValueError(
                f"ok is true, but the required check {bad[0][:60]} was skipped and not allowed"
            )
        return self


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


# --- what the store's documents hold, as read back ------------------------------------------
# manifest.json and download-metadata.json are read from the store before every update; each
# entry is validated here (docs/MANIFESTS.md has the formats), so a damaged one is named and
# nothing is written, instead of a KeyError deep inside a merge.

Url = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s]{1,2000}$")]
Timestamp = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")]
Build = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{1,64}$")]


class SourceSummary(_Open):
    filename: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")]
    sha256: Sha256


class ManifestEntry(_Open):
    """One runtime in manifest.json. Fields later versions added are optional (entries written
    before variants, SBOMs and build numbers stay valid)."""

    name: Annotated[str, StringConstraints(pattern=r"^python-[a-z0-9.-]{1,120}\.tar\.zst$")]
    version: Version
    variant: Literal[tuple(v.value for v in VariantName)] = "default"  # type: ignore[valid-type]
    stack: Name
    distro: Name
    distro_version: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9.]{0,15}$")]
    arch: Literal[tuple(UV_ARCH)]  # type: ignore[valid-type]
    profile: Name
    url: Url
    metadata_url: Url
    sbom_url: Url | None = None
    sha256: Sha256
    size: Annotated[int, Field(gt=0)]
    build: Build | None = None
    source: SourceSummary | None = None
    fingerprint: Sha256 | None = None
    published_at: Timestamp
    jit: bool | None = None
    # An x86-64 level build (uv's arch variant); only amd64 runtimes have one.
    cpu_level: Literal[tuple(UV_ARCH_VARIANT)] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _level_on_amd64(self) -> Self:
        if self.cpu_level is not None and UV_ARCH[self.arch] != "x86_64":
            raise ValueError(f"cpu_level {self.cpu_level} on arch {self.arch}: levels are x86-64")
        return self


class UvArch(_Open):
    family: Literal[tuple(UV_ARCH.values())]  # type: ignore[valid-type]
    variant: Literal[tuple(UV_ARCH_VARIANT.values())] | None = None  # type: ignore[valid-type]


class UvEntry(_Open):
    """One entry of uv's download-metadata.json as the farm writes it."""

    name: Literal["cpython"]
    arch: UvArch
    os: Literal["linux"]
    libc: Literal["gnu"]
    major: Literal[3]
    minor: Annotated[int, Field(ge=0, le=999)]
    patch: Annotated[int, Field(ge=0, le=999)]
    prerelease: Annotated[str, StringConstraints(pattern=r"^((a|b|rc)[0-9]{1,3})?$")] = ""
    url: Url
    sha256: Sha256
    variant: Literal["freethreaded"] | None = None
    build: Build | None = None


UV_KEY = re.compile(
    r"cpython-3\.[0-9]{1,3}\.[0-9]{1,3}((a|b|rc)[0-9]{1,3})?(\+[a-z]{1,20})?-linux-[a-z0-9_]{1,20}-gnu"
)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "entry"
    return f"{field}: {first['msg']}"


def manifest_entry_damage(raw: Any) -> str | None:
    """What is wrong with one manifest.json entry, or None."""
    if not isinstance(raw, dict):
        return "is not an object"
    try:
        entry = ManifestEntry.model_validate(raw)
    except ValidationError as exc:
        return _first_error(exc)
    label = f"{entry.version}{VariantName(entry.variant).abi_suffix}"
    arch = f"{entry.arch}{entry.cpu_level or ''}"  # amd64v3 for an x86-64 level build
    expected = f"python-{label}-{entry.distro}-{entry.distro_version}-{arch}.tar.zst"
    if entry.name != expected:
        return f"name {entry.name} is not what its version/variant/distro/arch say ({expected})"
    return None


def uv_entry_damage(key: Any, raw: Any) -> str | None:
    """What is wrong with one download-metadata.json entry, or None."""
    if not isinstance(key, str) or not UV_KEY.fullmatch(key):
        return "is not a key the farm writes (cpython-X.Y.Z[+variant]-linux-ARCH-gnu)"
    if not isinstance(raw, dict):
        return "is not an object"
    try:
        UvEntry.model_validate(raw)
    except ValidationError as exc:
        return _first_error(exc)
    return None
