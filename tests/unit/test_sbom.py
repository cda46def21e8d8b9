"""The SBOM: bundled components read from a CPython-shaped tarball, CycloneDX written and
validated with cyclonedx-python-lib, and the manifest fields that point at it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from orchestrator.errors import PackagingError
from orchestrator.publish.manifests import build_number, manifest_entry, uv_entry
from orchestrator.publish.sbom import build_sbom, sbom_name, validate_sbom
from orchestrator.sources.bundled import bundled_components

SPDX = {
    "SPDXID": "SPDXRef-DOCUMENT",
    "spdxVersion": "SPDX-2.3",
    "files": [],
    "relationships": [],
    "packages": [
        {
            "SPDXID": "SPDXRef-PACKAGE-expat",
            "name": "expat",
            "versionInfo": "2.6.3",
            "downloadLocation": "https://example.org/expat-2.6.3.tar.gz",
            "checksums": [{"algorithm": "SHA256", "checksumValue": "1" * 64}],
            "externalRefs": [
                {
                    "referenceCategory": "SECURITY",
                    "referenceLocator": "cpe:2.3:a:libexpat_project:libexpat:2.6.3:*:*:*:*:*:*:*",
                    "referenceType": "cpe23Type",
                }
            ],
        },
        {
            "SPDXID": "SPDXRef-PACKAGE-hacl-star",
            "name": "hacl-star",
            "versionInfo": "bb3d0dc8d9d15a5cd51094d5b69e70aa09005ff0",
            "downloadLocation": "https://example.org/hacl.zip",
            "checksums": [{"algorithm": "SHA256", "checksumValue": "2" * 64}],
            "externalRefs": [],
        },
    ],
}


def _tarball(path: Path, *, with_sbom: bool = True) -> Path:
    files = {
        "Modules/expat/expat.h": "#define XML_MAJOR_VERSION 2\n#define XML_MINOR_VERSION 7\n"
        "#define XML_MICRO_VERSION 1\n",
        "Modules/_decimal/libmpdec/mpdecimal.h": '#define MPD_VERSION "2.5.1"\n',
        "Include/internal/mimalloc/mimalloc.h": "#define MI_MALLOC_VERSION 212   // major\n",
        "Lib/ensurepip/_bundled/pip-25.1.1-py3-none-any.whl": "wheel",
    }
    if with_sbom:
        files["Misc/sbom.spdx.json"] = json.dumps(SPDX)
    with tarfile.open(path, "w:xz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"Python-3.13.5/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bundled_components_prefer_the_vendored_headers(tmp_path: Path) -> None:
    components = {c.name: c for c in bundled_components(_tarball(tmp_path / "Python.tar.xz"))}
    assert sorted(components) == ["expat", "hacl-star", "mimalloc", "mpdecimal", "pip"]
    expat = components["expat"]
    # What is compiled (expat.h) wins over what CPython's own SBOM states, which is kept.
    assert (expat.version, expat.sbom_version) == ("2.7.1", "2.6.3")
    assert expat.cpe == "cpe:2.3:a:libexpat_project:libexpat:2.7.1:*:*:*:*:*:*:*"
    assert expat.sha256 is None  # the SBOM's checksum is of 2.6.3's tarball
    assert components["hacl-star"].sha256 == "2" * 64
    assert components["mimalloc"].version == "2.1.2"
    assert components["pip"].purl == "pkg:pypi/pip@25.1.1"
    # Versions before 3.12 have no Misc/sbom.spdx.json: the headers still say what is there.
    old = {c.name for c in bundled_components(_tarball(tmp_path / "old.tar.xz", with_sbom=False))}
    assert old == {"expat", "mimalloc", "mpdecimal", "pip"}


def _record() -> dict[str, object]:
    return {
        "name": "python-3.13.5-debian-12-amd64.tar.zst",
        "version": "3.13.5",
        "major": 3,
        "minor": 13,
        "patch": 5,
        "prerelease": "",
        "stack": "debian-12",
        "distro": "debian",
        "distro_version": "12",
        "codename": "bookworm",
        "arch": "amd64",
        "profile": "fast",
        "sha256": "e" * 64,
        "size": 10,
        "fingerprint": "f" * 64,
        "built_at": "2026-11-24T16:30:12Z",
        "source": {
            "filename": "Python-3.13.5.tar.xz",
            "sha256": "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640",
            "url": "http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz",
            "verification": {
                "methods": ["sha256", "openpgp"],
                "openpgp": {
                    "fingerprint": "7169605F62C751356D054A26A821E680E5FA6305",
                    "signed_at": "2025-06-11T17:45:54Z",
                },
                "sigstore": None,
            },
        },
        "runtime_packages": ["libc6", "libssl3"],
        "run_image_packages": {
            "libc6": "2.36-9+deb12u10",
            "libssl3": "3.0.17-1~deb12u2",
            "tzdata": "2025b-0+deb12u1",
        },
    }


def test_sbom_names_cpython_its_source_and_the_packages(tmp_path: Path) -> None:
    bundled = bundled_components(_tarball(tmp_path / "Python.tar.xz"))
    text = build_sbom(_record(), bundled=bundled, ships_pip_wheel=False)
    validate_sbom(text, what="t")  # raises on a schema error
    document = json.loads(text)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    assert document["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "e" * 64}]
    by_ref = {c["bom-ref"]: c for c in document["components"]}
    cpython = by_ref["cpython"]
    assert cpython["version"] == "3.13.5"
    assert cpython["hashes"][0]["content"] == _record()["source"]["sha256"]  # type: ignore[index]
    props = {p["name"]: p["value"] for p in cpython["properties"]}
    assert props["python-farm:openpgp-fingerprint"] == "7169605F62C751356D054A26A821E680E5FA6305"
    assert props["python-farm:source-verified-by"] == "sha256,openpgp"
    assert by_ref["bundled:expat"]["version"] == "2.7.1"
    assert "bundled:pip" not in by_ref  # the profile ships no pip wheel
    ssl = by_ref["deb:libssl3"]
    assert ssl["purl"] == "pkg:deb/debian/libssl3@3.0.17-1~deb12u2?arch=amd64&distro=bookworm"
    assert {p["value"] for p in ssl["properties"] if p["name"] == "python-farm:relation"} == {
        "linked"
    }
    assert by_ref["deb:tzdata"]["version"] == "2025b-0+deb12u1"
    # Same archive, same SBOM serial number.
    assert (
        json.loads(build_sbom(_record(), bundled=bundled, ships_pip_wheel=False))["serialNumber"]
        == document["serialNumber"]
    )


def test_a_vendored_copy_the_runtime_does_not_use_is_left_out(tmp_path: Path) -> None:
    record = _record()
    record["runtime_packages"] = ["libc6", "libexpat1"]
    record["run_image_packages"] = {"libc6": "2.36", "libexpat1": "2.5.0-1"}
    bundled = bundled_components(_tarball(tmp_path / "Python.tar.xz"))
    document = json.loads(build_sbom(record, bundled=bundled, ships_pip_wheel=True))
    refs = {c["bom-ref"] for c in document["components"]}
    assert "bundled:expat" not in refs and "deb:libexpat1" in refs and "bundled:pip" in refs


def test_unknown_package_versions_are_an_error() -> None:
    record = _record()
    record["runtime_packages"] = ["libc6", "libffi8"]
    with pytest.raises(PackagingError, match="no installed version known for libffi8"):
        build_sbom(record, bundled=[], ships_pip_wheel=False)


def test_invalid_sbom_text_is_caught() -> None:
    with pytest.raises(PackagingError, match="does not validate"):
        validate_sbom(
            json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": "x"}), what="t"
        )


def test_manifests_carry_build_number_sbom_and_source_proof() -> None:
    record = _record()
    assert build_number(record) == "20261124163012"
    entry = manifest_entry(
        record, url="u", metadata_url="m", sbom_url="s", published_at="2026-11-24T17:00:00Z"
    )
    assert entry["sbom_url"] == "s" and entry["build"] == "20261124163012"
    assert entry["source"]["verified_by"] == ["sha256", "openpgp"]
    assert entry["source"]["openpgp_fingerprint"] == "7169605F62C751356D054A26A821E680E5FA6305"
    assert uv_entry(record, url="u", sbom_url="s")["build"] == "20261124163012"
    later = {**record, "built_at": "2026-11-25T01:00:00Z"}
    assert int(build_number(later)) > int(build_number(record))
    assert sbom_name(str(record["name"])) == "python-3.13.5-debian-12-amd64.sbom.cdx.json"
