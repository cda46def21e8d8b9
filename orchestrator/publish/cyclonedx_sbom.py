"""The SBOM written with cyclonedx-python-lib (CycloneDX 1.6 JSON) and validated against the
official schema. Imported only when an SBOM is written or checked (orchestrator.publish.sbom):
its JSON validator (jsonschema, rfc3987-syntax) compiles 39 lark grammars on import, about
3 s on 2 cores, which a nightly run that skips every cell must not pay.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from orchestrator.errors import PackagingError
from orchestrator.sources.bundled import BundledComponent

PROPERTY = "python-farm"  # namespace of our CycloneDX properties
# A vendored copy is not what runs when the runtime links the system's library instead.
SYSTEM_REPLACEMENTS = {"expat": "libexpat", "mpdecimal": "libmpdec", "libb2": "libb2-"}


def _sha256(value: str) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=value)]


def _props(**values: object) -> list[Property]:
    return [
        Property(name=f"{PROPERTY}:{key.replace('_', '-')}", value=str(value))
        for key, value in values.items()
        if value not in (None, "", [])
    ]


def _cpython(record: dict[str, Any]) -> Component:
    source = record["source"]
    verification = source.get("verification") or {}
    openpgp = verification.get("openpgp") or {}
    sigstore = verification.get("sigstore") or {}
    qualifiers = {"download_url": source["url"]} if source.get("url") else {}
    refs = (
        [ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(source["url"]))]
        if source.get("url")
        else []
    )
    return Component(
        type=ComponentType.APPLICATION,
        bom_ref="cpython",
        name="cpython",
        version=record["version"],
        description=f"CPython {record['version']}{_variant_note(record)}, "
        f"built from {source['filename']}",
        hashes=_sha256(source["sha256"]),
        cpe=f"cpe:2.3:a:python:python:{record['version']}:*:*:*:*:*:*:*",
        purl=PackageURL(
            type="generic", name="cpython", version=record["version"], qualifiers=qualifiers
        ),
        external_references=refs,
        properties=_props(
            source_filename=source["filename"],
            source_verified_by=",".join(verification.get("methods", ["sha256"])),
            openpgp_fingerprint=openpgp.get("fingerprint"),
            openpgp_signed_at=openpgp.get("signed_at"),
            sigstore_identity=sigstore.get("identity"),
            sigstore_issuer=sigstore.get("issuer"),
            # Only for other variants: a default runtime's SBOM reads as before variants.
            variant=None if record.get("variant", "default") == "default" else record["variant"],
            # Likewise only for x86-64 level runtimes (v2, v3, v4).
            cpu_level=record.get("cpu_level") or None,
        ),
    )


def _variant_note(record: dict[str, Any]) -> str:
    return " (free-threaded)" if record.get("variant") == "freethreaded" else ""


def _bundled(component: BundledComponent) -> Component:
    refs = []
    if component.download_url:
        refs.append(
            ExternalReference(
                type=ExternalReferenceType.DISTRIBUTION, url=XsUri(component.download_url)
            )
        )
    return Component(
        type=ComponentType.LIBRARY,
        bom_ref=f"bundled:{component.name}",
        name=component.name,
        version=component.version,
        cpe=component.cpe,
        purl=PackageURL.from_string(component.purl) if component.purl else None,
        hashes=_sha256(component.sha256) if component.sha256 else None,
        external_references=refs,
        properties=_props(
            vendored_in=component.path or None,
            cpython_sbom_version=component.sbom_version,
            relation="bundled",
        ),
    )


def _package(name: str, version: str, record: dict[str, Any], *, linked: bool) -> Component:
    purl = PackageURL(
        type="deb",
        namespace=record["distro"],
        name=name,
        version=version,
        qualifiers={"arch": record["arch"], "distro": record.get("codename") or record["stack"]},
    )
    return Component(
        type=ComponentType.LIBRARY,
        bom_ref=f"deb:{name}",
        name=name,
        version=version,
        purl=purl,
        properties=_props(relation="linked" if linked else "stack", run_image=record.get("stack")),
    )


def build_sbom(
    record: dict[str, Any], *, bundled: Sequence[BundledComponent], ships_pip_wheel: bool
) -> str:
    """The SBOM for the archive `record` describes (its metadata, after verification)."""
    linked = set(record.get("runtime_packages", []))
    installed: dict[str, str] = record.get("run_image_packages", {})
    missing = sorted(linked - set(installed))
    if missing:
        raise PackagingError(
            f"{record['name']}: no installed version known for {', '.join(missing)}",
            hint="the run image lacks packages the runtime links; verify the runtime",
        )
    runtime = Component(
        type=ComponentType.APPLICATION,
        bom_ref="runtime",
        name=record["name"].removesuffix(".tar.zst"),
        version=record["version"],
        hashes=_sha256(record["sha256"]),
        properties=_props(
            stack=record["stack"],
            arch=record["arch"],
            profile=record["profile"],
            fingerprint=record.get("fingerprint"),
            built_at=record.get("built_at"),
        ),
    )
    cpython = _cpython(record)
    vendored = [
        _bundled(c)
        for c in bundled
        if not any(p.startswith(SYSTEM_REPLACEMENTS.get(c.name, "\0")) for p in linked)
        and (ships_pip_wheel or c.purpose != "python-package" or c.name != "pip")
    ]
    packages = [_package(n, v, record, linked=n in linked) for n, v in sorted(installed.items())]
    built_at = record.get("built_at")
    bom = Bom(
        # Stable for one archive: the same runtime always gets the same serial number.
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"sha256:{record['sha256']}"),
        metadata=BomMetaData(
            component=runtime,
            timestamp=dt.datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            if built_at
            else None,
        ),
        components=[cpython, *vendored, *packages],
    )
    bom.register_dependency(runtime, [cpython, *[p for p in packages if p.name not in linked]])
    bom.register_dependency(cpython, [*vendored, *[p for p in packages if p.name in linked]])
    text = JsonV1Dot6(bom).output_as_string(indent=2) + "\n"
    validate_sbom(text, what=record["name"])
    return text


def validate_sbom(text: str, *, what: str) -> None:
    """Check `text` against the CycloneDX 1.6 JSON schema; PackagingError naming the problem."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise PackagingError(f"{what}: the SBOM does not validate against CycloneDX 1.6: {error}")
