"""Third-party code CPython's source tarball carries (expat, mpdecimal, mimalloc, HACL*, libb2,
macholib, the pip wheel), read from the tarball itself for the SBOM.

Versions come from the vendored headers where they exist (what is compiled), else from the
SBOM CPython ships in Misc/sbom.spdx.json (3.12+); where the two disagree both are kept
(CPython 3.13.5's SBOM says expat 2.6.3 while its expat.h says 2.7.1). One streaming pass
over the tarball, never unpacked.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import SourceError

_HEADERS = {
    "Modules/expat/expat.h": "expat",
    "Modules/_decimal/libmpdec/mpdecimal.h": "mpdecimal",
    "Include/internal/mimalloc/mimalloc.h": "mimalloc",
}
_WHEEL = re.compile(r"Lib/ensurepip/_bundled/(?P<name>[A-Za-z0-9_]+)-(?P<version>[^-]+)-.*\.whl")
_LIMIT = 4 * 1024 * 1024  # the biggest of these files is ~1 MB


@dataclass(frozen=True, kw_only=True)
class BundledComponent:
    name: str
    version: str
    purpose: str  # "library" or "python-package"
    cpe: str | None = None
    purl: str | None = None
    download_url: str | None = None
    sha256: str | None = None  # of the upstream release CPython vendored, per its SBOM
    sbom_version: str | None = None  # what Misc/sbom.spdx.json states, when it differs
    path: str = ""  # where it lives in CPython's tree
    properties: dict[str, str] = field(default_factory=dict)


def _header_version(name: str, text: str) -> str | None:
    if name == "expat":
        parts = [
            re.search(rf"#define XML_{p}_VERSION (\d+)", text) for p in ("MAJOR", "MINOR", "MICRO")
        ]
        return ".".join(m.group(1) for m in parts if m) if all(parts) else None
    if name == "mpdecimal":
        match = re.search(r'#define MPD_VERSION "([^"]+)"', text)
        return match.group(1) if match else None
    if name == "mimalloc":
        match = re.search(r"#define MI_MALLOC_VERSION (\d+)", text)
        if not match:
            return None
        number = int(match.group(1))  # major + 2 digits minor (+ patch in the last digit)
        return f"{number // 100}.{number // 10 % 10}.{number % 10}"
    return None


def _from_sbom(document: dict[str, object]) -> dict[str, BundledComponent]:
    components: dict[str, BundledComponent] = {}
    packages = document.get("packages")
    if not isinstance(packages, list):
        raise ValueError("no packages list")
    for package in packages:
        refs = [r.get("referenceLocator", "") for r in package.get("externalRefs", [])]
        checksums = {
            c.get("algorithm"): c.get("checksumValue") for c in package.get("checksums", [])
        }
        name = str(package["name"])
        components[name] = BundledComponent(
            name=name,
            version=str(package.get("versionInfo", "")),
            purpose="python-package" if any(r.startswith("pkg:pypi/") for r in refs) else "library",
            cpe=next((r for r in refs if r.startswith("cpe:")), None),
            purl=next((r for r in refs if r.startswith("pkg:")), None),
            download_url=package.get("downloadLocation") or None,
            sha256=checksums.get("SHA256"),
        )
    return components


def bundled_components(tarball: Path) -> list[BundledComponent]:
    """What CPython's tarball vendors, in name order. SourceError if it cannot be read."""
    header_versions: dict[str, tuple[str, str]] = {}
    from_sbom: dict[str, BundledComponent] = {}
    wheels: list[BundledComponent] = []
    try:
        with tarfile.open(tarball, mode="r|*") as archive:
            for member in archive:
                # Members are Python-X.Y.Z/<path>; the top directory's name does not matter.
                path = member.name.split("/", 1)[1] if "/" in member.name else ""
                if found := _WHEEL.fullmatch(path):
                    wheels.append(
                        BundledComponent(
                            name=found["name"],
                            version=found["version"],
                            purpose="python-package",
                            purl=f"pkg:pypi/{found['name'].lower()}@{found['version']}",
                            path=path,
                        )
                    )
                    continue
                wanted = path in _HEADERS or path == "Misc/sbom.spdx.json"
                if not (wanted and member.isfile() and member.size <= _LIMIT):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                text = handle.read().decode("utf-8", errors="replace")
                if path == "Misc/sbom.spdx.json":
                    from_sbom = _from_sbom(json.loads(text))
                elif version := _header_version(_HEADERS[path], text):
                    header_versions[_HEADERS[path]] = (version, path)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{tarball}: cannot read the source tarball: {exc}") from None
    except (ValueError, KeyError, AttributeError) as exc:
        raise SourceError(
            f"{tarball}: Misc/sbom.spdx.json is not SPDX as expected ({exc})"
        ) from None

    components = dict(from_sbom)
    for name, (version, path) in header_versions.items():
        known = components.get(name)
        if known is None:
            components[name] = BundledComponent(
                name=name, version=version, purpose="library", path=path
            )
        else:
            components[name] = BundledComponent(
                name=known.name,
                version=version,
                purpose=known.purpose,
                cpe=known.cpe.replace(f":{known.version}:", f":{version}:") if known.cpe else None,
                purl=known.purl,
                # The checksum in CPython's SBOM is of the release it names, not of this one.
                download_url=known.download_url if known.version == version else None,
                sha256=known.sha256 if known.version == version else None,
                sbom_version=known.version if known.version != version else None,
                path=path,
            )
    for wheel in wheels:
        components.setdefault(wheel.name, wheel)
    return sorted(components.values(), key=lambda c: c.name)
