"""matrix.yaml's schema: pydantic models for every key, validated on load.

Closed sets are enums, versions and hashes are checked by pattern, and cross-field rules
(default profile exists, excludes match something) live in MatrixModel's validator.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal, Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)


class Arch(enum.StrEnum):
    """Closed set of CPU architectures, spelled the Debian (dpkg) way."""

    AMD64 = "amd64"
    ARM64 = "arm64"

    @property
    def docker_platform(self) -> str:
        return f"linux/{self.value}"

    @property
    def uname(self) -> str:
        return {"amd64": "x86_64", "arm64": "aarch64"}[self.value]

    @property
    def gnu_type(self) -> str:
        """What `dpkg-architecture -qDEB_BUILD_GNU_TYPE` prints on this arch."""
        return f"{self.uname}-linux-gnu"

    @property
    def hub_namespace(self) -> str:
        """Docker Hub's per-arch namespace for official images (amd64/debian, arm64v8/debian)."""
        return {"amd64": "amd64", "arm64": "arm64v8"}[self.value]


_VERSION_RE = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?P<pre>(a|b|rc)\d+)?$")
_STACK_NAME_RE = r"^[a-z][a-z0-9]*-[0-9][0-9.]*$"
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_specifier(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        SpecifierSet(value)
    except InvalidSpecifier as exc:
        raise ValueError(f"not a version specifier like '>=3.14' or '<=3.12': {value!r}") from exc
    return value


def _version_matches(spec: str | None, version: Version) -> bool:
    return spec is None or SpecifierSet(spec).contains(version, prereleases=True)


class ConditionalItem(_Strict):
    """A package or module that applies only to some Python versions."""

    name: NonEmpty
    python: str | None = Field(default=None, description="PEP 440 specifier, e.g. '>=3.14'")

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


PackageEntry = NonEmpty | ConditionalItem


def select_entries(entries: Sequence[PackageEntry], version: Version | None) -> list[str]:
    """Names of the entries that apply to `version` (all of them when version is None)."""
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif version is None or entry.applies_to(version):
            names.append(entry.name)
    return names


_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Footprint(_Strict):
    """What the recipe removes or reshapes after `make install` (orchestrator/recipe/footprint.py).

    The defaults change nothing. Every option keeps Python whole: what stays imports and works,
    and verification runs on the result like on any other runtime.
    """

    sourceless: list[str] = Field(
        default_factory=list,
        description="stdlib modules/packages shipped as bytecode only (data modules)",
    )
    ensurepip_wheels: bool = Field(
        default=True, description="keep the pip wheel that `python -m venv` installs from"
    )
    drop_unusable: bool = Field(
        default=False,
        description="remove stdlib packages whose extension module was not built (tkinter...)",
    )

    @field_validator("sourceless")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _MODULE_NAME.match(name):
                raise ValueError(f"{name!r} is not a module name (like 'pydoc_data' or 'a.b')")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return names


class Profile(_Strict):
    description: str = ""
    pgo: bool
    lto: bool
    ensurepip: bool = Field(default=False, description="install pip into the runtime")
    footprint: Footprint = Field(default_factory=Footprint)
    # Limits of one cell's build container; they change when a build stops, never its output.
    timeout_minutes: float = Field(
        default=240,
        gt=0,
        le=7 * 24 * 60,
        description="kill the build container and fail the cell after this long (--timeout)",
    )
    stall_minutes: float = Field(
        default=30,
        gt=0,
        le=7 * 24 * 60,
        description="report in the log when a build prints nothing for this long",
    )


class BuildFlags(_Strict):
    """Compiler/linker flags given to `make`, never to configure, so they stay out of sysconfig."""

    extra_cflags: str = ""
    ldflags: str = ""


_FEED_NAME = r"^[a-z0-9][a-z0-9.-]*$"
_HTTP_URL = r"^(https?|file)://[^\s]+$"
Minor = Annotated[str, StringConstraints(pattern=r"^3\.[0-9]+$")]


def _end_of_month(value: object) -> object:
    """'2026-10' -> 2026-10-31; anything else is left for pydantic to judge."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}", value):
        year, month = (int(part) for part in value.split("-"))
        if 1 <= month <= 12:
            first_of_next = dt.date(year + month // 12, month % 12 + 1, 1)
            return first_of_next - dt.timedelta(days=1)
    return value


class PythonOrgFeedSettings(_Strict):
    """python.org's release API (the JSON behind its downloads pages)."""

    kind: Literal["python.org"]
    name: Annotated[str, StringConstraints(pattern=_FEED_NAME)] = "python.org"
    url: Annotated[str, StringConstraints(pattern=_HTTP_URL)] = Field(
        default="https://www.python.org/api/v2/downloads/",
        description="base of the API: release/ and release_file/ are read below it",
    )


class DebianSourcesFeedSettings(_Strict):
    """A Debian archive's source index: python3.X packages carry upstream's tarballs."""

    kind: Literal["debian-sources"]
    name: Annotated[str, StringConstraints(pattern=_FEED_NAME)]
    archive: Annotated[str, StringConstraints(pattern=_HTTP_URL)] = Field(
        description="archive root, e.g. http://deb.debian.org/debian"
    )
    suite: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    component: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$")] = "main"
    keyring: Path | None = Field(
        default=None,
        description="Debian archive keyring: the suite's InRelease must verify with it, and "
        "Sources.xz must have the sha256 InRelease lists",
    )


ReleaseFeedSettings = Annotated[
    PythonOrgFeedSettings | DebianSourcesFeedSettings, Field(discriminator="kind")
]


class SourceSettings(_Strict):
    cache_dir: Path = Path(".cache/sources")
    mirrors: list[NonEmpty] = Field(min_length=1)
    release_feeds: list[ReleaseFeedSettings] = Field(
        default_factory=list, description="where `orchestrator versions` learns of releases"
    )
    end_of_life: dict[Minor, dt.date] = Field(
        default_factory=dict,
        description="minor -> end of life, from the devguide's release-cycle.json; YYYY-MM "
        "(as upstream states future dates) means the last day of that month",
    )

    @field_validator("end_of_life", mode="before")
    @classmethod
    def _month_dates(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {minor: _end_of_month(when) for minor, when in value.items()}

    @field_validator("release_feeds")
    @classmethod
    def _unique_feed_names(
        cls, feeds: list[PythonOrgFeedSettings | DebianSourcesFeedSettings]
    ) -> list[PythonOrgFeedSettings | DebianSourcesFeedSettings]:
        names = [feed.name for feed in feeds]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"feed name(s) used more than once: {', '.join(duplicates)}")
        return feeds

    @field_validator("mirrors")
    @classmethod
    def _known_placeholders(cls, mirrors: list[str]) -> list[str]:
        allowed = {"version", "filename", "major_minor", "ext"}
        for template in mirrors:
            used = set(re.findall(r"{(\w*)}", template))
            unknown = used - allowed
            if unknown:
                raise ValueError(
                    f"mirror {template!r} uses unknown placeholder(s) {sorted(unknown)}; "
                    f"allowed: {sorted(allowed)}"
                )
            if not re.match(r"^(https?|file)://", template):
                raise ValueError(
                    f"mirror {template!r} must start with https://, http:// or file://"
                )
        return mirrors


Fingerprint = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-F]{40}$"),
    Field(description="full OpenPGP v4 fingerprint: 40 upper-case hex digits, no spaces"),
]


class OpenPGPSigners(_Strict):
    """Release managers' keys for some Python versions."""

    python: str = Field(description="PEP 440 specifier, e.g. '>=3.12,<3.14'")
    fingerprints: list[Fingerprint] = Field(min_length=1)

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


class SigstoreSigner(_Strict):
    """The identity and OIDC issuer a release's Sigstore bundle must carry."""

    python: str = Field(description="PEP 440 specifier, e.g. '>=3.14,<3.15'")
    identity: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]
    issuer: Annotated[str, StringConstraints(pattern=r"^https://[^\s]+$")]

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


class SignatureSettings(_Strict):
    """Upstream signatures checked on every source tarball, on top of the sha256 pin."""

    required: bool = Field(
        default=False,
        description="true: a tarball with no signature to check is refused (a bad one always is)",
    )
    keys_dir: Path = Field(
        default=Path("keys"),
        description="public keys as <FINGERPRINT>.asc, relative to matrix.yaml",
    )
    openpgp: list[OpenPGPSigners] = Field(default_factory=list)
    sigstore: list[SigstoreSigner] = Field(default_factory=list)


class PublishSettings(_Strict):
    """Where runtimes are published. CLI flags and FARM_PUBLISH_* variables override these;
    credentials never live here (boto3's standard chain provides them)."""

    bucket: str | None = None
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    public_base_url: str | None = None
    local_dir: Path | None = Field(
        default=None,
        description="store used when no bucket is configured; default OUT/publish",
    )


class PythonSource(_Strict):
    version: str
    sha256: Sha256
    filename: str | None = Field(default=None, description="default: Python-{version}.tar.xz")

    @field_validator("version")
    @classmethod
    def _version_format(cls, value: str) -> str:
        if not _VERSION_RE.match(value):
            raise ValueError(f"bad version {value!r}: expected X.Y.Z, optionally with a1/b2/rc1")
        return value

    @property
    def parsed(self) -> Version:
        return Version(self.version)

    @property
    def major_minor(self) -> str:
        return f"{self.parsed.major}.{self.parsed.minor}"

    @property
    def tarball(self) -> str:
        return self.filename or f"Python-{self.version}.tar.xz"

    @property
    def extension(self) -> str:
        """'tar.xz' for Python-3.13.5.tar.xz, 'tar.gz' for Python-3.11.2.tgz."""
        name = self.tarball
        if name.endswith(".tgz"):
            return "tar.gz"
        match = re.search(r"\.(tar\.\w+)$", name)
        return match.group(1) if match else name.rsplit(".", 1)[-1]


class Stack(_Strict):
    distro: Annotated[str, StringConstraints(pattern=r"^[a-z]+$")]
    distro_version: Annotated[str, StringConstraints(pattern=r"^[0-9][0-9.]*$")]
    codename: NonEmpty
    base_image: NonEmpty = Field(
        description="official images get the per-arch Hub namespace (debian:bookworm -> "
        "arm64v8/debian:bookworm); a mapping arch -> image overrides that"
    )
    base_image_per_arch: dict[Arch, NonEmpty] = Field(default_factory=dict)
    build_packages: list[PackageEntry] = Field(min_length=1)
    run_packages: list[PackageEntry] = Field(min_length=1)

    def image_for(self, arch: Arch) -> str:
        if arch in self.base_image_per_arch:
            return self.base_image_per_arch[arch]
        repository = self.base_image.split(":", 1)[0].split("@", 1)[0]
        if "/" in repository:  # not an official library image: trust it to be multi-arch
            return self.base_image
        return f"{arch.hub_namespace}/{self.base_image}"

    def build_packages_for(self, versions: Iterable[Version]) -> list[str]:
        """Union of build packages over `versions`: one builder image serves them all."""
        return _union(self.build_packages, versions)

    def run_packages_for(self, versions: Iterable[Version]) -> list[str]:
        return _union(self.run_packages, versions)


def _union(entries: Sequence[PackageEntry], versions: Iterable[Version]) -> list[str]:
    wanted: set[str] = set()
    for version in versions:
        wanted.update(select_entries(entries, version))
    return sorted(wanted)


class Exclude(_Strict):
    python: str = "*"
    stack: str = "*"
    arch: str = "*"
    reason: str = ""

    def matches(self, version: str, stack: str, arch: str) -> bool:
        return (
            fnmatch.fnmatchcase(version, self.python)
            and fnmatch.fnmatchcase(stack, self.stack)
            and fnmatch.fnmatchcase(arch, self.arch)
        )


class MatrixModel(_Strict):
    recipe_version: int = Field(ge=1)
    default_profile: str
    profiles: dict[str, Profile] = Field(min_length=1)
    build_flags: BuildFlags
    sources: SourceSettings
    pythons: list[PythonSource] = Field(min_length=1)
    stacks: dict[Annotated[str, StringConstraints(pattern=_STACK_NAME_RE)], Stack] = Field(
        min_length=1
    )
    arches: list[Arch] = Field(min_length=1)
    excludes: list[Exclude] = Field(default_factory=list)
    expected_modules: list[PackageEntry] = Field(min_length=1)
    signatures: SignatureSettings = Field(default_factory=SignatureSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    engines: dict[Arch, NonEmpty] = Field(
        default_factory=dict,
        description="arch -> Docker endpoint (DOCKER_HOST style, e.g. ssh://arm64-builder); "
        "arches not listed use the default engine (arm64 then runs under emulation)",
    )
    runners: dict[Arch, NonEmpty] = Field(
        default_factory=lambda: {Arch.AMD64: "ubuntu-24.04", Arch.ARM64: "ubuntu-24.04-arm"},
        description="GitHub Actions runner label per arch for `plan --format github-matrix`",
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles "
                f"{sorted(self.profiles)}"
            )
        seen: set[str] = set()
        for python in self.pythons:
            if python.version in seen:
                raise ValueError(f"pythons: version {python.version} is listed twice")
            seen.add(python.version)
        if len(set(self.arches)) != len(self.arches):
            raise ValueError("arches: an arch is listed twice")
        for index, exclude in enumerate(self.excludes):
            self._check_exclude(index, exclude)
        return self

    def _check_exclude(self, index: int, exclude: Exclude) -> None:
        checks = (
            ("stack", exclude.stack, list(self.stacks)),
            ("arch", exclude.arch, [a.value for a in self.arches]),
            ("python", exclude.python, [p.version for p in self.pythons]),
        )
        for field_name, pattern, known in checks:
            if not fnmatch.filter(known, pattern):
                raise ValueError(
                    f"excludes[{index}].{field_name}: {pattern!r} matches no {field_name} "
                    f"in the matrix (known: {', '.join(known)})"
                )
