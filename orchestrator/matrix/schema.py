"""matrix.yaml's schema: pydantic models for every key, validated on load.

Closed sets are enums, versions and hashes are checked by pattern, and cross-field rules
(default profile exists, excludes match something) live in MatrixModel's validator.
"""

from __future__ import annotations

import datetime as dt
import enum
import fnmatch
import re
import string
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal, Self

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
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


# Every pattern in this module is matched against the WHOLE value: re.fullmatch (Python's `$`
# also matches before a trailing newline, so `re.match("...$")` let "3.13.5\n" through) or
# pydantic's StringConstraints, whose Rust engine anchors `$` at the very end.
#
# Bounded digits: a version reaches paths, URLs and shell lines, and `int()` of 5000 digits
# is an error of its own. No leading zeros: `03.013.05` is not a spelling of 3.13.5, and
# would name a second cell and archive for it.
_NUMBER = r"(?:0|[1-9][0-9]{0,2})"
VERSION_PATTERN = rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:(?:a|b|rc){_NUMBER})?"
_VERSION_RE = re.compile(VERSION_PATTERN)
# Upstream's tarball names (Python-3.11.2.tgz, Python-3.13.5.tar.xz), nothing that is a path.
TARBALL_SUFFIXES = (".tar.xz", ".tgz", ".tar.gz", ".tar.bz2", ".tar.zst")
# Top-level directories a cache or store must never be (or be inside): the system's own.
_SYSTEM_DIRS = frozenset(
    {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin",
     "sys", "usr"}
)  # fmt: skip


def _contained_or_explicit(path: Path) -> Path:
    """A directory the farm writes into: relative without `..` (so inside the project), or
    an absolute path naming a directory of its own, never `/` or inside a system directory."""
    if re.search(r"[\x00-\x1f\x7f]", str(path)):
        raise ValueError(f"{str(path)[:80]!r}: control character in a path")
    if not path.is_absolute():
        if ".." in path.parts:
            raise ValueError(f"{path}: '..' would leave the project; use an absolute path")
        return path
    parts = path.parts[1:]
    if not parts or parts[0] in _SYSTEM_DIRS or ".." in parts:
        raise ValueError(
            f"{path}: not a directory the farm may write into (/, '..' and system "
            "directories are refused)"
        )
    return path


WritableDir = Annotated[Path, AfterValidator(_contained_or_explicit)]

# One character rule per kind of value that reaches a Dockerfile, a shell line, make, a path
# or a URL. None of them admits whitespace, quotes, `$`, `;`, braces (Jinja) or `..`.
DEBIAN_PACKAGE = r"[a-z0-9][a-z0-9+.-]{0,99}"  # Debian policy 5.6.1
MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,99}(\.[A-Za-z_][A-Za-z0-9_]{0,99}){0,9}"
Codename = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
# A Docker image reference: [registry[:port]/]path[:tag][@sha256:digest].
ImageRef = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/:-]{0,254}(@sha256:[0-9a-f]{64})?$")
]
EngineUrl = Annotated[str, StringConstraints(pattern=r"^(unix|tcp|ssh|npipe)://[^\s'\"`$;{}]+$")]
RunnerLabel = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
ProfileName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]
# configure's --prefix: it reaches configure, make, sed in python-config and a bind mount, so
# plain path components only (a leading dot is fine: /app/.heroku/python).
_INSTALL_PREFIX = re.compile(r"(/[A-Za-z0-9_.+-]{1,64}){1,16}")


def _install_prefix(value: str) -> str:
    parts = value.split("/")[1:]
    if not _INSTALL_PREFIX.fullmatch(value) or any(p in {".", ".."} for p in parts):
        raise ValueError(
            f"{value[:80]!r} is not an absolute, normalised path of plain names "
            "(like /app/.heroku/python)"
        )
    return value


InstallPrefix = Annotated[str, AfterValidator(_install_prefix)]
# One flag per whitespace-separated token; make expands `$(...)` in variable values, so `$`
# is out, as is anything a shell or make would read specially.
_FLAG = re.compile(r"-[A-Za-z0-9_=,.:+/-]{1,200}")


def _flags(value: str) -> str:
    bad = [token for token in value.split() if not _FLAG.fullmatch(token)]
    if bad:
        raise ValueError(f"{bad[0][:60]!r} is not a plain compiler/linker flag like -O2")
    return value


Flags = Annotated[str, AfterValidator(_flags)]


def _names(pattern: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(entries: list[PackageEntry]) -> list[PackageEntry]:
        for name in select_entries(entries, None):
            if not compiled.fullmatch(name):
                raise ValueError(f"{name[:60]!r} is not a valid {what}")
        return entries

    return AfterValidator(check)


# DISTRO-VERSION. It is in cell ids, archive names, manifest keys and image tags (Docker's
# stop at 128 characters): at most 40, what a published record's stack may be.
STACK_NAME_PATTERN = r"^[a-z][a-z0-9]{0,22}-[0-9][0-9.]{0,15}$"
DISTRO_PATTERN = r"^[a-z]{1,23}$"
DISTRO_VERSION_PATTERN = r"^[0-9][0-9.]{0,15}$"
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
DebianPackages = Annotated[
    list[PackageEntry], Field(min_length=1), _names(DEBIAN_PACKAGE, "Debian package name")
]


def select_entries(entries: Sequence[PackageEntry], version: Version | None) -> list[str]:
    """Names of the entries that apply to `version` (all of them when version is None)."""
    names: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif version is None or entry.applies_to(version):
            names.append(entry.name)
    return names


_MODULE_NAME = re.compile(MODULE_NAME)


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
            if not _MODULE_NAME.fullmatch(name):
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
    install_prefix: InstallPrefix | None = Field(
        default=None,
        description="configure --prefix for this profile (wins over the stack's); the runtime "
        "stays relocatable, and at this path even an embedding program needs no PYTHONHOME",
    )
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
    # The experimental JIT (orchestrator/jit.py): built in but off at run time (PYTHON_JIT=1).
    jit: StrictBool | Literal["auto"] = Field(
        default=False,
        description="false: no JIT; true: every cell gets it, and a cell whose version or "
        "stack cannot is refused; auto: the cells whose stack has the LLVM their version needs",
    )


class BuildFlags(_Strict):
    """Compiler/linker flags given to `make`, never to configure, so they stay out of sysconfig."""

    extra_cflags: Flags = ""
    ldflags: Flags = ""


_FEED_NAME = r"^[a-z0-9][a-z0-9.-]*$"


def check_url(value: str, *, schemes: tuple[str, ...] = ("https", "http", "file")) -> str:
    """A URL the farm will open: one of `schemes`, no whitespace or control characters, and
    one urllib can take apart (`http://[::1/x` is not: urllib raises where it is opened)."""
    if not re.fullmatch(r"[^\s\x00-\x1f\x7f]+", value):
        raise ValueError(f"{value[:80]!r} holds whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (parsing the port is what raises for a bad one)
    except ValueError as exc:
        raise ValueError(f"{value[:80]!r} is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{value[:80]!r} must start with {', '.join(s + '://' for s in schemes)}")
    if parts.scheme != "file" and not parts.hostname:
        raise ValueError(f"{value[:80]!r} names no host")
    return value


Url = Annotated[str, AfterValidator(check_url)]
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
    url: Url = Field(
        default="https://www.python.org/api/v2/downloads/",
        description="base of the API: release/ and release_file/ are read below it",
    )


class DebianSourcesFeedSettings(_Strict):
    """A Debian archive's source index: python3.X packages carry upstream's tarballs."""

    kind: Literal["debian-sources"]
    name: Annotated[str, StringConstraints(pattern=_FEED_NAME)]
    archive: Url = Field(description="archive root, e.g. http://deb.debian.org/debian")
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


# ~25 MB tarballs: ten minutes is ~40 KB/s, slower than any mirror worth waiting for.
DEFAULT_DOWNLOAD_DEADLINE_SECONDS = 600.0
# One S3 operation, retries included: no retry starts after it. An endpoint that accepts and
# never answers costs one read timeout (at most this long), then one clear error.
DEFAULT_S3_DEADLINE_SECONDS = 60.0
# Bound on a pinned size: CPython's tarballs are ~20-30 MB.
MAX_TARBALL_BYTES = 1024**3


class SourceSettings(_Strict):
    cache_dir: WritableDir = Field(
        default=Path(".cache/sources"),
        description="verified tarballs; relative to matrix.yaml (no '..'), or an absolute "
        "directory outside the system's",
    )
    mirrors: list[NonEmpty] = Field(min_length=1)
    download_deadline_seconds: float = Field(
        default=DEFAULT_DOWNLOAD_DEADLINE_SECONDS,
        gt=0,
        le=24 * 3600,
        description="give up on a mirror when one download of a tarball takes longer than "
        "this in total (the per-read timeout alone lets a server drip bytes forever)",
    )
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
            try:
                fields = list(string.Formatter().parse(template))
            except ValueError as exc:
                raise ValueError(f"mirror {template!r}: {exc}") from None
            for _text, name, spec, conversion in fields:
                # Plain {name} only: {version.x}, {version[0]} or {version!r} reach into
                # Python objects, not the documented values.
                if name is not None and (name not in allowed or spec or conversion):
                    raise ValueError(
                        f"mirror {template!r}: placeholder {{{name}}} is not one of "
                        f"{{version}} {{filename}} {{major_minor}} {{ext}}"
                    )
            try:
                check_url(template)
            except ValueError as exc:
                raise ValueError(f"mirror {exc}") from None
            if template.startswith("file://"):
                # A local mirror is a directory of tarballs, never a device or a system path.
                _contained_or_explicit(Path(template.removeprefix("file://")))
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
    issuer: Annotated[str, AfterValidator(lambda v: check_url(v, schemes=("https",)))]

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


class SignatureSettings(_Strict):
    """Upstream signatures checked on every source tarball, on top of the sha256 pin."""

    required: bool = Field(
        default=False,
        description="true: a tarball with no signature to check is refused (a bad one always is)",
    )
    keys_dir: WritableDir = Field(
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
    local_dir: WritableDir | None = Field(
        default=None,
        description="store used when no bucket is configured; default OUT/publish",
    )
    deadline_seconds: float = Field(
        default=DEFAULT_S3_DEADLINE_SECONDS,
        gt=0,
        le=24 * 3600,
        description="give up on one S3 operation (all its retries included) after this long",
    )


class PythonSource(_Strict):
    version: str
    sha256: Sha256
    # Optional so older matrices load; without it downloads stop at UNPINNED_SIZE_CAP.
    size: StrictInt | None = Field(
        default=None,
        gt=0,
        le=MAX_TARBALL_BYTES,
        description="upstream tarball's size in bytes: a download stops as soon as it exceeds it",
    )
    filename: str | None = Field(default=None, description="default: Python-{version}.tar.xz")

    @field_validator("version")
    @classmethod
    def _version_format(cls, value: str) -> str:
        if not _VERSION_RE.fullmatch(value):
            raise ValueError(
                f"bad version {value[:40]!r}: expected X.Y.Z, optionally with a1/b2/rc1"
            )
        return value

    @model_validator(mode="after")
    def _plain_tarball_name(self) -> PythonSource:
        # The name becomes a path in the cache (and is deleted there on a mismatch): only
        # upstream's own names for this version.
        if self.filename is not None:
            allowed = [f"Python-{self.version}{suffix}" for suffix in TARBALL_SUFFIXES]
            if self.filename not in allowed:
                raise ValueError(
                    f"filename {self.filename[:80]!r} is not upstream's name for "
                    f"{self.version}: one of {', '.join(allowed)}"
                )
        return self

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
        match = re.search(r"\.(tar\.\w+)\Z", name)
        return match.group(1) if match else name.rsplit(".", 1)[-1]


class Stack(_Strict):
    distro: Annotated[str, StringConstraints(pattern=DISTRO_PATTERN)]
    distro_version: Annotated[str, StringConstraints(pattern=DISTRO_VERSION_PATTERN)]
    codename: Codename
    base_image: ImageRef = Field(
        description="official images get the per-arch Hub namespace (debian:bookworm -> "
        "arm64v8/debian:bookworm); a mapping arch -> image overrides that"
    )
    base_image_per_arch: dict[Arch, ImageRef] = Field(default_factory=dict)
    build_packages: DebianPackages
    run_packages: DebianPackages
    install_prefix: InstallPrefix | None = Field(
        default=None,
        description="configure --prefix for this stack's cells, for platforms that always unpack "
        "at one path (Heroku: /app/.heroku/python)",
    )
    llvm: list[Annotated[int, Field(ge=1, le=999)]] = Field(
        default_factory=list,
        description="LLVM majors (clang-N, llvm-N) the farm may install from this stack's own "
        "archive into its builder image, for the JIT; empty: no JIT on this stack",
    )

    @field_validator("llvm")
    @classmethod
    def _unique_llvm(cls, majors: list[int]) -> list[int]:
        if len(set(majors)) != len(majors):
            raise ValueError(f"an LLVM major is listed twice: {majors}")
        return majors

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


class VariantName(enum.StrEnum):
    """Closed set of build variants: each one fixes a layout (the `t` of python3.13t), an
    archive and cell name and uv's spelling, so a new one needs code, not only YAML."""

    DEFAULT = "default"
    FREETHREADED = "freethreaded"

    @property
    def abi_suffix(self) -> str:
        """CPython's ABI_THREAD: in bin/python3.Xt, lib/python3.Xt/, libpython3.Xt.so and
        the extension suffix (.cpython-313t-...); also the suffix of our cell ids and archive
        names, as in uv's `3.13t` request."""
        return "t" if self is VariantName.FREETHREADED else ""

    @property
    def required_args(self) -> tuple[str, ...]:
        return ("--disable-gil",) if self is VariantName.FREETHREADED else ()

    @property
    def minimum_python(self) -> Version | None:
        # --disable-gil (PEP 703) first shipped in 3.13.0.
        return Version("3.13.0a1") if self is VariantName.FREETHREADED else None


# The ./configure options the recipe sets itself (orchestrator/buildspec.py configure_args),
# by the shell variable autoconf stores them in. A variant adds feature and package options
# only (--enable-X, --disable-X, --with-X, --without-X); it may not set one of these again,
# since configure takes the last one given and the record, fingerprint and verification
# would describe a runtime that was not built. Directory and system options (--prefix and
# its abbreviations --pre, --p; --exec-prefix, --libdir, --host) are never a variant's.
RECIPE_CONFIGURE_OPTIONS = frozenset(
    {"enable_shared", "with_static_libpython", "enable_loadable_sqlite_extensions",
     "enable_option_checking", "with_ensurepip", "enable_optimizations", "with_lto",
     "enable_test_modules", "enable_experimental_jit"}
)  # fmt: skip
_FEATURE_OPTION = re.compile(
    r"--(enable|disable|with|without)-([A-Za-z0-9][A-Za-z0-9_.+-]{0,99})(=[^=\s]*)?"
)


def configure_option(arg: str) -> str | None:
    """autoconf's variable for a feature or package option (configure maps `-+.` to `_`):
    --disable-test-modules -> enable_test_modules, --with-lto=thin -> with_lto; None for any
    other argument."""
    match = _FEATURE_OPTION.fullmatch(arg)
    if match is None:
        return None
    kind = "enable" if match.group(1) in ("enable", "disable") else "with"
    return f"{kind}_{re.sub(r'[-+.]', '_', match.group(2))}"


def _variant_arg(arg: str) -> str:
    _flags(arg)
    option = configure_option(arg)
    if option is None:
        raise ValueError(
            f"{arg[:60]!r}: a variant adds feature and package options only (--enable-X, "
            "--disable-X, --with-X, --without-X); directory and system options such as "
            "--prefix belong to the recipe"
        )
    if option in RECIPE_CONFIGURE_OPTIONS:
        raise ValueError(
            f"{arg[:60]!r}: the recipe sets this option itself (orchestrator/buildspec.py); "
            "a variant may not change it"
        )
    return arg


class VariantSettings(_Strict):
    """One entry of `variants`: what the variant adds to configure and which Pythons get it."""

    description: str = ""
    python: str | None = Field(
        default=None, description="PEP 440 specifier of the versions built in this variant"
    )
    configure_args: list[Annotated[str, AfterValidator(_variant_arg)]] = Field(
        default_factory=list, description="appended to ./configure's arguments"
    )

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


def _default_variants() -> dict[VariantName, VariantSettings]:
    return {VariantName.DEFAULT: VariantSettings()}


def _variant_key(value: object) -> object:
    """One clear line for a variant name the farm does not know (the enum's own message
    lists nothing useful)."""
    if isinstance(value, dict):
        known = [v.value for v in VariantName]
        for key in value:
            if key not in known:
                raise ValueError(
                    f"unknown variant {str(key)[:40]!r}; known variants: {', '.join(known)}"
                )
    return value


class CpuLevel(enum.StrEnum):
    """x86-64 microarchitecture levels (the x86-64 psABI's x86-64-v2/v3/v4) an amd64 runtime
    may be built for; a closed set, spelled as uv's ArchVariant (crates/uv-platform arch.rs)."""

    V2 = "v2"
    V3 = "v3"
    V4 = "v4"

    @property
    def march(self) -> str:
        """GCC's and ld's name of the level: -march=x86-64-v3, -z x86-64-v3."""
        return f"x86-64-{self.value}"

    @property
    def cflags(self) -> str:
        return f"-march={self.march}"

    @property
    def ldflags(self) -> str:
        """Marks every linked file with GNU_PROPERTY_X86_ISA_1_NEEDED for the level, so
        glibc's loader refuses it on an older CPU ("CPU ISA level is lower than required")
        instead of the program dying of SIGILL later."""
        return f"-Wl,-z,{self.march}"

    @property
    def isa_bit(self) -> int:
        """The level's bit in GNU_PROPERTY_X86_ISA_1_NEEDED (binutils: baseline 1, v2 2,
        v3 4, v4 8)."""
        return 1 << (list(CpuLevel).index(self) + 1)

    @property
    def cpu_flags(self) -> tuple[str, ...]:
        """What /proc/cpuinfo calls the features the level needs, its lower levels' included
        (the psABI's lists; Linux spells SSE3 `pni`, LAHF-SAHF `lahf_lm`, LZCNT `abm` and
        reports XSAVE only when the kernel enabled it, i.e. OSXSAVE)."""
        flags: list[str] = []
        for level in CpuLevel:
            flags.extend(_LEVEL_FLAGS[level])
            if level is self:
                return tuple(flags)
        raise AssertionError(self)  # pragma: no cover

    def missing_flags(self, host_flags: Iterable[str]) -> list[str]:
        """The features of this level `host_flags` lacks (empty: the host has the level)."""
        have = set(host_flags)
        return [flag for flag in self.cpu_flags if flag not in have]


_LEVEL_FLAGS: dict[CpuLevel, tuple[str, ...]] = {
    CpuLevel.V2: ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"),
    CpuLevel.V3: ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
    CpuLevel.V4: ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
}


class CpuLevelSettings(_Strict):
    """`cpu_levels`: amd64 runtimes built again for newer x86-64 levels, beside the baseline
    one (cell 3.13.5-debian-12-amd64v3, uv key cpython-3.13.5-linux-x86_64_v3-gnu)."""

    levels: list[CpuLevel] = Field(min_length=1)
    nightly: StrictBool = Field(
        default=False,
        description="false: `plan`, `nightly` and `check-manifest` leave the level cells out "
        "unless a selector names them (matches a level cell and not its baseline twin)",
    )
    python: str | None = Field(
        default=None, description="PEP 440 specifier of the versions built at these levels"
    )
    description: str = ""

    _check_python = field_validator("python")(classmethod(lambda cls, v: _parse_specifier(v)))

    @field_validator("levels")
    @classmethod
    def _unique_levels(cls, levels: list[CpuLevel]) -> list[CpuLevel]:
        if len(set(levels)) != len(levels):
            raise ValueError(f"a level is listed twice: {[level.value for level in levels]}")
        return sorted(levels, key=list(CpuLevel).index)

    def applies_to(self, version: Version) -> bool:
        return _version_matches(self.python, version)


# The only arch with CPU levels: x86-64's psABI defines them; uv reads them for x86_64 only.
CPU_LEVEL_ARCH = Arch.AMD64


class Exclude(_Strict):
    python: str = "*"
    stack: str = "*"
    arch: str = "*"
    variant: str = "*"
    # A glob over the CPU level (v2, v3, v4); a baseline cell's level is "", which only "*"
    # matches, so `cpu_level: "v*"` removes level cells and leaves their baseline twins.
    cpu_level: str = "*"
    reason: str = ""

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if (self.python, self.stack, self.arch, self.variant, self.cpu_level) == ("*",) * 5:
            raise ValueError(
                "an exclude needs at least one of python, stack, arch, variant, cpu_level"
            )
        return self

    def matches(
        self,
        version: str,
        stack: str,
        arch: str,
        variant: str = VariantName.DEFAULT.value,
        cpu_level: str = "",
    ) -> bool:
        return (
            fnmatch.fnmatchcase(version, self.python)
            and fnmatch.fnmatchcase(stack, self.stack)
            and fnmatch.fnmatchcase(arch, self.arch)
            and fnmatch.fnmatchcase(variant, self.variant)
            and fnmatch.fnmatchcase(cpu_level, self.cpu_level)
        )


class MatrixModel(_Strict):
    recipe_version: int = Field(ge=1)
    default_profile: str
    profiles: dict[ProfileName, Profile] = Field(min_length=1)
    build_flags: BuildFlags
    sources: SourceSettings
    pythons: list[PythonSource] = Field(min_length=1)
    stacks: dict[Annotated[str, StringConstraints(pattern=STACK_NAME_PATTERN)], Stack] = Field(
        min_length=1
    )
    arches: list[Arch] = Field(min_length=1)
    variants: Annotated[
        dict[VariantName, VariantSettings], BeforeValidator(_variant_key), Field(min_length=1)
    ] = Field(
        default_factory=_default_variants,
        description="build variants (default, freethreaded); without the key: default only",
    )
    cpu_levels: CpuLevelSettings | None = Field(
        default=None,
        description="x86-64 levels amd64 runtimes are also built for; without the key: none",
    )
    excludes: list[Exclude] = Field(default_factory=list)
    expected_modules: Annotated[
        list[PackageEntry], Field(min_length=1), _names(MODULE_NAME, "module name")
    ]
    signatures: SignatureSettings = Field(default_factory=SignatureSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    engines: dict[Arch, EngineUrl] = Field(
        default_factory=dict,
        description="arch -> Docker endpoint (DOCKER_HOST style, e.g. ssh://arm64-builder); "
        "arches not listed use the default engine (arm64 then runs under emulation)",
    )
    runners: dict[Arch, RunnerLabel] = Field(
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
        for name, settings in self.variants.items():
            self._check_variant(name, settings)
        if self.cpu_levels is not None and CPU_LEVEL_ARCH not in self.arches:
            raise ValueError(
                f"cpu_levels: x86-64 levels apply to {CPU_LEVEL_ARCH.value} cells only, and "
                f"arches has no {CPU_LEVEL_ARCH.value}"
            )
        for index, exclude in enumerate(self.excludes):
            self._check_exclude(index, exclude)
        self._check_variant_excluded_once()
        if not any(
            not any(e.matches(*key) for e in self.excludes)
            for key in self.cell_keys()
            if not key[4]  # a level cell alone is not a matrix: its baseline twin must stay
        ):
            raise ValueError("excludes remove every cell of the matrix")
        missing = [arch.value for arch in self.arches if arch not in self.runners]
        if missing:
            raise ValueError(f"runners: no runner label for arch {', '.join(missing)}")
        return self

    def levels(self) -> list[CpuLevel]:
        """The CPU levels amd64 cells are also built for (none without `cpu_levels`)."""
        return list(self.cpu_levels.levels) if self.cpu_levels is not None else []

    def python_variants(self) -> list[tuple[PythonSource, VariantName]]:
        """Every (python, variant) pair the variants' specifiers admit, before excludes."""
        return [
            (python, name)
            for python in self.pythons
            for name, settings in self.variants.items()
            if settings.applies_to(python.parsed)
        ]

    def _check_variant(self, name: VariantName, settings: VariantSettings) -> None:
        where = f"variants.{name.value}"
        for arg in name.required_args:
            if arg not in settings.configure_args:
                raise ValueError(f"{where}.configure_args: the {name.value} variant needs {arg}")
        for arg in VariantName.FREETHREADED.required_args:
            if name is not VariantName.FREETHREADED and arg in settings.configure_args:
                raise ValueError(
                    f"{where}.configure_args: {arg} makes a free-threaded runtime; "
                    "use the freethreaded variant"
                )
        minimum = name.minimum_python
        if minimum is None:
            return
        too_old = [
            p.version for p in self.pythons if settings.applies_to(p.parsed) and p.parsed < minimum
        ]
        if too_old:
            admits = repr(settings.python) if settings.python else "no python specifier"
            raise ValueError(
                f"{where}.python: {admits} admits {', '.join(too_old)}, but {name.value} "
                f"builds need Python >={minimum.major}.{minimum.minor} (e.g. python: "
                f'">={minimum.major}.{minimum.minor}")'
            )

    def cell_keys(self) -> list[tuple[str, str, str, str, str]]:
        """(version, stack, arch, variant, cpu level) of every cell before excludes; the
        level is "" for the baseline cell and v2/v3/v4 for the amd64 cells built again."""
        keys: list[tuple[str, str, str, str, str]] = []
        for python, variant in self.python_variants():
            levels = [""]
            if self.cpu_levels is not None and self.cpu_levels.applies_to(python.parsed):
                levels.extend(level.value for level in self.cpu_levels.levels)
            for stack in self.stacks:
                for arch in self.arches:
                    for level in levels if arch is CPU_LEVEL_ARCH else [""]:
                        keys.append((python.version, stack, arch.value, variant.value, level))
        return keys

    def _check_variant_excluded_once(self) -> None:
        """An exclude naming a variant or a CPU level must remove something the ones before it
        did not: a second one for the same cells is a copy-paste slip that hides what was
        meant."""
        cells = self.cell_keys()
        for index, exclude in enumerate(self.excludes):
            if exclude.variant == "*" and exclude.cpu_level == "*":
                continue
            what = (
                f"variant {exclude.variant!r}"
                if exclude.cpu_level == "*"
                else f"cpu_level {exclude.cpu_level!r}"
            )
            mine = [c for c in cells if exclude.matches(*c)]
            if not mine:
                raise ValueError(
                    f"excludes[{index}]: names no cell: {what} has none "
                    f"for python {exclude.python!r}, stack {exclude.stack!r}, arch {exclude.arch!r}"
                )
            for earlier_index, earlier in enumerate(self.excludes[:index]):
                if all(earlier.matches(*c) for c in mine):
                    raise ValueError(
                        f"excludes[{index}]: {what} is excluded twice: "
                        f"excludes[{earlier_index}] already removes every cell it names"
                    )

    def _check_exclude(self, index: int, exclude: Exclude) -> None:
        checks = (
            ("stack", exclude.stack, list(self.stacks)),
            ("arch", exclude.arch, [a.value for a in self.arches]),
            ("python", exclude.python, [p.version for p in self.pythons]),
            ("variant", exclude.variant, [v.value for v in self.variants]),
            ("cpu_level", exclude.cpu_level, [level.value for level in self.levels()]),
        )
        for field_name, pattern, known in checks:
            if pattern != "*" and not fnmatch.filter(known, pattern):
                raise ValueError(
                    f"excludes[{index}].{field_name}: {pattern!r} matches no {field_name} "
                    f"in the matrix (known: {', '.join(known) or 'none'})"
                )
