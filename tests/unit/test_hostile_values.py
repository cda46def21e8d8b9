"""Hostile-input suite, values: listed cases for findings 7, 8 and 9 of issue 16 and for every
CLI command's options, arguments and environment variables.

Each case runs the CLI in process in a work dir of its own (tests/hostile_support.py: no
Docker, no network) and must be refused: the exit status it names (or any non-zero one),
exactly one `error:` line that says what it names, no traceback, a peak RSS under 512 MB and
nothing written outside the work dir.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_files import CELL, record_path, runtime_archive
from tests.hostile_support import (
    REPO,
    Tally,
    Work,
    error_lines,
    make_work,
    outside_changes,
    problems_of,
    run_in_process,
    tree_state,
)

TALLY = Tally("values (findings 7-9, every command's options and variables)")
Edit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Case:
    argv: tuple[str, ...] = ("plan",)
    edit: Edit | None = None  # changes the work dir's matrix
    text: Callable[[str], str] | None = None  # changes its text (for what YAML cannot dump)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Work], list[str]] | None = None  # returns argv (replaces `argv`)
    code: int | None = 2  # None: any non-zero status
    says: str = ""  # in the error line


def _set(*path: Any, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _stack(name: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["stacks"][name] = data["stacks"].pop("debian-12")
        data["excludes"] = [e for e in data["excludes"] if "debian-12" not in str(e)]

    return edit


def _variant_args(*args: str) -> Edit:
    return _set("variants", value={"default": {"configure_args": list(args)}})


def _feeds(feed: dict[str, Any]) -> Edit:
    return _set("sources", "release_feeds", value=[feed])


def _record(**changes: Any) -> Callable[[Work], list[str]]:
    """`verify` of a real small archive whose record has `changes` (None: key removed)."""

    def setup(work: Work) -> list[str]:
        archive, record = runtime_archive(work)
        for key, value in changes.items():
            if value is None:
                record.pop(key, None)
            else:
                record[key] = value
        record_path(archive).write_text(json.dumps(record))
        return ["verify", str(archive)]

    return setup


def _record_text(text: str) -> Callable[[Work], list[str]]:
    def setup(work: Work) -> list[str]:
        archive, _ = runtime_archive(work)
        record_path(archive).write_text(text)
        return ["verify", str(archive)]

    return setup


def _special_bits(mode: int) -> Callable[[Work], list[str]]:
    return lambda work: _setuid_archive(work, mode)


def _setuid_archive(work: Work, mode: int = 0o4755) -> list[str]:
    """A runtime archive whose interpreter has `mode` (setuid root, finding 7): the audit
    refuses it before any container would unpack it."""
    import io
    import tarfile

    import zstandard

    from orchestrator.archive import sha256_of

    archive, record = runtime_archive(work)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("./bin", "./include", "./lib"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        payload = b"#!/bin/sh\n"
        info = tarfile.TarInfo("./bin/python3.13")
        info.size, info.mode = len(payload), mode
        tar.addfile(info, io.BytesIO(payload))
    archive.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    record["sha256"] = sha256_of(archive)
    record_path(archive).write_text(json.dumps(record))
    return ["verify", str(archive)]


def _debian_feed(work: Work, index: bytes) -> None:
    """A debian-sources feed served from the work dir (file://), no keyring."""
    directory = work.root / "debian" / "dists" / "sid" / "main" / "source"
    directory.mkdir(parents=True)
    (directory / "Sources.xz").write_bytes(index)
    work.edit_matrix(
        _feeds({"kind": "debian-sources", "name": "local", "suite": "sid",
                "archive": (work.root / "debian").as_uri()})
    )  # fmt: skip


def _versions_with_index(index: bytes) -> Callable[[Work], list[str]]:
    def setup(work: Work) -> list[str]:
        _debian_feed(work, index)
        return ["versions"]

    return setup


def _xz(text: str) -> bytes:
    import lzma

    return lzma.compress(text.encode())


BILLION_LAUGHS = 'lol0: &l0 ["x","x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"lol{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 9)
)
NL = "\n"

CASES: dict[str, Case] = {
    # --- finding 7: a trailing newline, leading zeros, lengths, recipe-owned options -----------
    "version with a trailing newline": Case(
        edit=_set("pythons", 2, "version", value="3.13.5\n"), says="version"
    ),
    "version 03.013.05": Case(
        edit=_set("pythons", 2, "version", value="03.013.05"), says="version"
    ),
    "version 3.13.05": Case(edit=_set("pythons", 2, "version", value="3.13.05"), says="version"),
    "version rc01": Case(edit=_set("pythons", 2, "version", value="3.13.5rc01"), says="version"),
    "version with a space": Case(
        edit=_set("pythons", 2, "version", value="3.13.5 "), says="version"
    ),
    "version in Arabic-Indic digits": Case(
        edit=_set("pythons", 2, "version", value="\u0663.13.5"), says="version"
    ),
    "build package with a newline": Case(
        edit=_set("stacks", "debian-12", "build_packages", value=["gcc\n"]), says="build_packages"
    ),
    "run package with a newline": Case(
        edit=_set("stacks", "debian-12", "run_packages", value=["libssl3\n"]), says="run_packages"
    ),
    "conditional package with a newline": Case(
        edit=_set(
            "stacks",
            "debian-12",
            "run_packages",
            value=[{"name": "gcc\nRUN id", "python": ">=3.12"}],
        ),
        says="run_packages",
    ),
    "stack install_prefix with a newline": Case(
        edit=_set("stacks", "debian-12", "install_prefix", value="/opt/x\n"), says="install_prefix"
    ),
    "profile install_prefix with a newline": Case(
        edit=_set("profiles", "fast", "install_prefix", value="/opt/x\n"), says="install_prefix"
    ),
    "expected module with a newline": Case(
        edit=_set("expected_modules", value=["ssl\n"]), says="expected_modules"
    ),
    "conditional module with a newline": Case(
        edit=_set("expected_modules", value=[{"name": "ssl\n", "python": ">=3.12"}]),
        says="expected_modules",
    ),
    "footprint entry with a newline": Case(
        edit=_set("profiles", "slim", "footprint", "sourceless", value=["encodings\n"]),
        says="sourceless",
    ),
    "https mirror with a newline": Case(
        edit=_set("sources", "mirrors", value=["https://x/{filename}\n"]), says="mirrors"
    ),
    "file mirror with a newline": Case(
        edit=_set("sources", "mirrors", value=["file:///srv/py/{filename}\n"]), says="mirrors"
    ),
    "codename with a newline": Case(
        edit=_set("stacks", "debian-12", "codename", value="bookworm\n"), says="codename"
    ),
    "base image with a newline": Case(
        edit=_set("stacks", "debian-12", "base_image", value="debian:bookworm\n"), says="base_image"
    ),
    "sha256 with a newline": Case(
        edit=_set("pythons", 2, "sha256", value="a" * 64 + "\n"), says="sha256"
    ),
    "fingerprint with a newline": Case(
        edit=_set(
            "signatures",
            "openpgp",
            0,
            "fingerprints",
            value=["7169605F62C751356D054A26A821E680E5FA6305\n"],
        ),
        says="fingerprints",
    ),
    "sigstore identity with a newline": Case(
        edit=_set("signatures", "sigstore", 0, "identity", value="a@b\n"), says="identity"
    ),
    "sigstore issuer with a newline": Case(
        edit=_set("signatures", "sigstore", 0, "issuer", value="https://accounts.google.com\n"),
        says="issuer",
    ),
    "runner label with a newline": Case(
        edit=_set("runners", value={"amd64": "ubuntu\n", "arm64": "x"}), says="runners"
    ),
    "engine URL with a newline": Case(
        edit=_set("engines", value={"arm64": "ssh://h\n"}), says="engines"
    ),
    "cache_dir with a newline": Case(
        edit=_set("sources", "cache_dir", value="cache\nx"), says="cache_dir"
    ),
    "keys_dir with a control character": Case(
        edit=_set("signatures", "keys_dir", value="keys\x1b[31m"), says="keys_dir"
    ),
    "stack name of 300 characters": Case(edit=_stack("debian-" + "1" * 293), says="stacks"),
    "stack name of 41 characters": Case(edit=_stack("d" * 24 + "-12"), says="stacks"),
    "distro of 300 characters": Case(
        edit=_set("stacks", "debian-12", "distro", value="d" * 300), says="distro"
    ),
    "distro_version of 300 characters": Case(
        edit=_set("stacks", "debian-12", "distro_version", value="1" * 300), says="distro_version"
    ),
    "variant sets --prefix": Case(edit=_variant_args("--prefix=/x"), says="configure_args"),
    "variant sets --pre (configure's abbreviation)": Case(
        edit=_variant_args("--pre=/x"), says="configure_args"
    ),
    "variant sets -prefix": Case(edit=_variant_args("-prefix=/x"), says="configure_args"),
    "variant sets --exec-prefix": Case(
        edit=_variant_args("--exec-prefix=/x"), says="configure_args"
    ),
    "variant sets --libdir": Case(edit=_variant_args("--libdir=/x"), says="configure_args"),
    "variant sets --host": Case(edit=_variant_args("--host=mips-linux-gnu"), says="configure_args"),
    "variant sets --without-lto": Case(edit=_variant_args("--without-lto"), says="configure_args"),
    "variant sets --with-lto=thin": Case(
        edit=_variant_args("--with-lto=thin"), says="configure_args"
    ),
    "variant sets --disable-shared": Case(
        edit=_variant_args("--disable-shared"), says="configure_args"
    ),
    "variant sets --enable-test_modules": Case(
        edit=_variant_args("--enable-test_modules"), says="configure_args"
    ),
    "variant sets --enable-optimizations": Case(
        edit=_variant_args("--enable-optimizations"), says="configure_args"
    ),
    "variant sets --with-ensurepip=install": Case(
        edit=_variant_args("--with-ensurepip=install"), says="configure_args"
    ),
    "variant sets --enable-experimental-jit": Case(
        edit=_variant_args("--enable-experimental-jit"), says="configure_args"
    ),
    "variant sets --with-static.libpython": Case(
        edit=_variant_args("--with-static.libpython"), says="configure_args"
    ),
    "variant sets CC=": Case(edit=_variant_args("CC=clang"), says="configure_args"),
    "variant arg with a newline": Case(
        edit=_variant_args("--with-pydebug\n"), says="configure_args"
    ),
    "setuid member in an archive": Case(setup=_setuid_archive, code=14, says="setuid"),
    "setgid member in an archive": Case(setup=_special_bits(0o2755), code=14, says="setgid"),
    "sticky member in an archive": Case(setup=_special_bits(0o1755), code=14, says="sticky"),
    # --- finding 8: tracebacks ---------------------------------------------------------------
    "recipe_version of 5000 digits": Case(
        text=lambda t: t.replace("recipe_version: 1", "recipe_version: " + "9" * 5000),
        says="digits",
    ),
    "a date that does not exist": Case(
        text=lambda t: t.replace("'3.9': 2025-10-31", "'3.9': 2025-02-30"), says="unreadable value"
    ),
    "mirror http://[::1/": Case(
        edit=_set("sources", "mirrors", value=["http://[::1/{filename}"]), says="Invalid IPv6 URL"
    ),
    "mirror with a bad port": Case(
        edit=_set("sources", "mirrors", value=["http://h:99999/{filename}"]), says="mirrors"
    ),
    "mirror without a host": Case(
        edit=_set("sources", "mirrors", value=["https:///{filename}"]), says="no host"
    ),
    "feed URL http://[::1/": Case(
        edit=_feeds({"kind": "python.org", "url": "http://[::1/"}), says="url"
    ),
    "feed archive ftp://": Case(
        edit=_feeds({"kind": "debian-sources", "name": "x", "suite": "sid", "archive": "ftp://x"}),
        says="archive",
    ),
    "publish.endpoint_url http://[::1/": Case(
        argv=("check-manifest",),
        edit=_set("publish", "endpoint_url", value="http://[::1/"),
        says="endpoint-url",
    ),
    "publish.region 'us east 1'": Case(
        argv=("check-manifest",), edit=_set("publish", "region", value="us east 1"), says="region"
    ),
    "publish --region 'us east 1'": Case(
        argv=("publish", CELL, "--region", "us east 1", "--bucket", "farm-test"), says="region"
    ),
    "publish --region with a newline": Case(
        argv=("publish", CELL, "--region", "us-east-1\n", "--bucket", "farm-test"), says="region"
    ),
    "publish --region of 100 characters": Case(
        argv=("publish", CELL, "--region", "r" * 100, "--bucket", "farm-test"), says="region"
    ),
    "FARM_PUBLISH_REGION 'us east 1'": Case(
        argv=("publish", CELL, "--bucket", "farm-test"),
        env={"FARM_PUBLISH_REGION": "us east 1"},
        says="region",
    ),
    "build --publish --region 'us east 1'": Case(
        argv=("build", CELL, "--publish", "--region", "us east 1"), says="region"
    ),
    "nightly --region 'us east 1'": Case(argv=("nightly", "--region", "us east 1"), says="region"),
    "verify: record arch mips": Case(setup=_record(arch="mips"), code=9, says="arch"),
    "verify: record arch missing": Case(setup=_record(arch=None), code=9, says="arch"),
    "verify: record major 2": Case(setup=_record(major=2), code=9, says="major"),
    "verify: record minor -1": Case(setup=_record(minor=-1), code=9, says="minor"),
    "verify: record minor a string": Case(setup=_record(minor="13"), code=9, says="minor"),
    "verify: record minor 1e400": Case(
        setup=_record_text('{"arch": "amd64", "major": 3, "minor": 1e400}'), code=9, says="minor"
    ),
    "verify: record version with a newline": Case(
        setup=_record(version="3.13.5\n"), code=9, says="version"
    ),
    "verify: record stack ../x": Case(setup=_record(stack="../x"), code=9, says="stack"),
    "verify: record stack not in the matrix": Case(
        setup=_record(stack="debian-99"), code=9, says="debian-99"
    ),
    "verify: record expected_modules a string": Case(
        setup=_record(expected_modules="ssl"), code=9, says="expected_modules"
    ),
    "verify: record expected_modules with shell": Case(
        setup=_record(expected_modules=["os; import this"]), code=9, says="expected_modules"
    ),
    "verify: record sha256 short": Case(setup=_record(sha256="abc"), code=9, says="sha256"),
    "verify: record variant nogil": Case(setup=_record(variant="nogil"), code=9, says="variant"),
    "verify: record a list": Case(setup=_record_text("[1, 2, 3]"), code=9, says="not an object"),
    "verify: record nested 100000 deep": Case(
        setup=_record_text("[" * 100_000 + "]" * 100_000), code=9, says="record"
    ),
    "verify --rebuild: record cell unknown": Case(
        setup=lambda w: [*_record(cell="3.99.1-debian-12-amd64")(w), "--rebuild"],
        code=2,
        says="3.99.1",
    ),
    "verify --rebuild: record without a cell": Case(
        setup=lambda w: [*_record(cell=None)(w), "--rebuild"], code=9, says="names no cell"
    ),
    "build --engine with shell": Case(
        argv=("build", CELL, "--engine", "arm64=ssh://h; id"), says="--engine"
    ),
    "build --engine with a newline": Case(
        argv=("build", CELL, "--engine", "arm64=ssh://h\nx"), says="--engine"
    ),
    "build --engine mips": Case(argv=("build", CELL, "--engine", "mips=ssh://h"), says="--engine"),
    "build --engine empty URL": Case(argv=("build", CELL, "--engine", "arm64="), says="--engine"),
    "nightly --engine http URL": Case(
        argv=("nightly", "--engine", "amd64=http://x"), says="--engine"
    ),
    # --- finding 9: one line, whatever the input holds ----------------------------------------
    "a NUL byte in the matrix": Case(
        text=lambda t: t.replace("recipe_version: 1", "recipe_version: 1\x00"), says="#x0000"
    ),
    "an escape character in the matrix": Case(
        text=lambda t: t.replace("recipe_version: 1", "recipe_version: 1\x1b"), says="#x001b"
    ),
    "a stack key with a newline": Case(edit=_stack("debian-12\nRUN id"), says="stacks"),
    "a profile key with a newline": Case(
        edit=lambda d: d["profiles"].update({"fast\nx": d["profiles"]["fast"]}), says="profiles"
    ),
    "a mapping key that is a list": Case(text=lambda t: "? [a, b]\n: 1\n" + t, says="plain value"),
    "a duplicate key": Case(text=lambda t: t + "\nrecipe_version: 2\n", says="duplicate key"),
    "tabs for indentation": Case(
        text=lambda t: t.replace("\n  release:", "\n\trelease:"), says="invalid YAML"
    ),
    "an unclosed quote": Case(text=lambda t: t + '\nx: "open\n', says="invalid YAML"),
    "a billion laughs under expected_modules": Case(
        text=lambda t: (
            BILLION_LAUGHS + t.replace("expected_modules:", "expected_modules: *l8\nx_modules:", 1)
        ),
        says="matrix.yaml",
    ),
    "FARM_OUT with a newline": Case(
        argv=("publish",), env={"FARM_OUT": "o\nut"}, code=1, says="o\\nut"
    ),
    "--out with a newline": Case(argv=("--out", "o\nut", "publish"), code=1, says="o\\nut"),
    "--matrix with a newline": Case(
        argv=("--matrix", "m\natrix.yaml", "plan"), says="m\\natrix.yaml"
    ),
    "FARM_MATRIX with a newline": Case(
        argv=("plan",), env={"FARM_MATRIX": "m\natrix.yaml"}, says="m\\natrix.yaml"
    ),
    "--matrix with undecodable bytes": Case(
        argv=("--matrix", "m\udcffatrix.yaml", "plan"), says="\\udcff"
    ),
    "a selector with a newline": Case(argv=("plan", "3.13.5\n-debian-12-amd64"), says="\\n"),
    "a selector with an escape sequence": Case(argv=("plan", "\x1b[2J\x1b[31mred"), says="\\x1b"),
    "a selector with a line separator": Case(argv=("plan", "a\u2028b"), says="\\u2028"),
    "a selector of 200000 characters": Case(argv=("plan", "x" * 200_000), says="characters cut"),
    "fetch a version with a newline": Case(argv=("fetch", "3.13.5\n"), says="3.13.5\\n"),
    "build a cell with a newline": Case(argv=("build", CELL + "\n"), says="\\n"),
    "no command": Case(argv=(), says="no command given"),
    "an unknown command": Case(argv=("bild",), says="No such command"),
    "an unknown global option": Case(argv=("--verbose", "plan"), says="No such option"),
    # --- every command's options and variables ------------------------------------------------
    "plan --format xml": Case(argv=("plan", "--format", "xml"), says="--format"),
    "plan: a selector matching nothing": Case(argv=("plan", "4.*"), says="matches no cell"),
    "plan: an empty selector": Case(argv=("plan", ""), says="matches no cell"),
    "plan: many stars": Case(argv=("plan", "*a" * 2000 + "b"), says="matches no cell"),
    "render --bogus": Case(argv=("render", "--bogus"), says="No such option"),
    "render: an argument": Case(argv=("render", "extra"), says="unexpected extra argument"),
    "versions --format xml": Case(argv=("versions", "--format", "xml"), says="--format"),
    "versions --minor without --update": Case(
        argv=("versions", "--minor", "3.13"), says="--update"
    ),
    "versions --drop-old without --update": Case(argv=("versions", "--drop-old"), says="--update"),
    "versions with no feeds": Case(argv=("versions",), says="no release feeds"),
    "versions --update with no feeds": Case(
        argv=("versions", "--update", "--minor", "3.99"), says="no release feeds"
    ),
    "versions: an index that is not xz": Case(
        setup=_versions_with_index(b"plain text\n"), code=12, says="xz"
    ),
    "versions: an index of binary lines": Case(
        setup=_versions_with_index(_xz("Package: python3.13\nVersion: \x00\x01\n")),
        code=None,
        says="local",
    ),
    "versions: an index with a version with a newline": Case(
        setup=_versions_with_index(
            _xz(
                "Package: python3.13\nVersion: 3.13.5\\n-1\nChecksums-Sha256:\n "
                + "a" * 64
                + " 1 python3.13_3.13.5.orig.tar.xz\n"
            )
        ),
        code=None,
        says="local",
    ),
    "fetch an unknown version": Case(argv=("fetch", "9.9.9"), says="unknown version"),
    "fetch: the only mirror is empty": Case(
        argv=("fetch", "3.13.5"), code=4, says="could not fetch"
    ),
    "build --profile unknown": Case(argv=("build", CELL, "--profile", "turbo"), says="turbo"),
    "build --profile ../x": Case(argv=("build", CELL, "--profile", "../x"), says="../x"),
    "build --jobs 0": Case(argv=("build", CELL, "--jobs", "0"), says="--jobs"),
    "build --jobs 10**20": Case(argv=("build", CELL, "--jobs", str(10**20)), says="--jobs"),
    "build --cpus 0": Case(argv=("build", CELL, "--cpus", "0"), says="--cpus"),
    "build --cpus inf": Case(argv=("build", CELL, "--cpus", "inf"), says="--cpus"),
    "build --memory 0": Case(argv=("build", CELL, "--memory", "0"), says="--memory"),
    "build --memory -1e400": Case(argv=("build", CELL, "--memory", "-1e400"), says="--memory"),
    "build --timeout 0": Case(argv=("build", CELL, "--timeout", "0"), says="--timeout"),
    "build --timeout x": Case(argv=("build", CELL, "--timeout", "x"), says="--timeout"),
    "build: an unknown cell": Case(argv=("build", "3.99.1-debian-12-amd64"), says="3.99.1"),
    "build: a glob matching nothing": Case(argv=("build", "*-mips"), says="*-mips"),
    "build: the default cell, no engine": Case(argv=("build",), code=5, says="Docker engine"),
    "build --publish --bucket Bad_Bucket": Case(
        argv=("build", CELL, "--publish", "--bucket", "Bad_Bucket"), says="bucket"
    ),
    "build --publish --prefix ../x": Case(
        argv=("build", CELL, "--publish", "--prefix", "../x"), says="prefix"
    ),
    "publish: nothing built": Case(argv=("publish",), code=1, says="nothing to publish"),
    "publish: an unknown cell": Case(argv=("publish", "3.99.1-debian-12-amd64"), says="3.99.1"),
    "publish --bucket ''": Case(argv=("publish", CELL, "--bucket", ""), says="bucket"),
    "publish --bucket of 64 characters": Case(
        argv=("publish", CELL, "--bucket", "b" * 64), says="bucket"
    ),
    "publish --bucket UPPER": Case(argv=("publish", CELL, "--bucket", "UPPER"), says="bucket"),
    "publish --bucket a..b": Case(argv=("publish", CELL, "--bucket", "a..b"), says="bucket"),
    "publish --bucket with a newline": Case(
        argv=("publish", CELL, "--bucket", "farm\n"), says="bucket"
    ),
    "publish --prefix ../x": Case(argv=("publish", CELL, "--prefix", "../x"), says="prefix"),
    "publish --prefix a//b": Case(argv=("publish", CELL, "--prefix", "a//b"), says="prefix"),
    "publish --prefix with a newline": Case(
        argv=("publish", CELL, "--prefix", "a\n"), says="prefix"
    ),
    "publish --endpoint-url ftp://x": Case(
        argv=("publish", CELL, "--endpoint-url", "ftp://x"), says="endpoint-url"
    ),
    "publish --endpoint-url http://": Case(
        argv=("publish", CELL, "--endpoint-url", "http://"), says="endpoint-url"
    ),
    "publish --endpoint-url with a newline": Case(
        argv=("publish", CELL, "--endpoint-url", "http://h\n"), says="endpoint-url"
    ),
    "publish --public-base-url javascript:": Case(
        argv=("publish", CELL, "--public-base-url", "javascript:alert(1)"), says="public-base-url"
    ),
    "publish --sweep-after nan": Case(
        argv=("publish", CELL, "--sweep-after", "nan"), says="--sweep-after"
    ),
    "publish --sweep-after -1": Case(
        argv=("publish", CELL, "--sweep-after", "-1"), says="--sweep-after"
    ),
    "publish --sweep-after 1e9": Case(
        argv=("publish", CELL, "--sweep-after", "1e9"), says="--sweep-after"
    ),
    "FARM_PUBLISH_BUCKET Bad_Bucket": Case(
        argv=("publish", CELL), env={"FARM_PUBLISH_BUCKET": "Bad_Bucket"}, says="bucket"
    ),
    "FARM_PUBLISH_PREFIX ../x": Case(
        argv=("publish", CELL), env={"FARM_PUBLISH_PREFIX": "../x"}, says="prefix"
    ),
    "FARM_PUBLISH_ENDPOINT_URL not a URL": Case(
        argv=("publish", CELL), env={"FARM_PUBLISH_ENDPOINT_URL": "not a url"}, says="endpoint-url"
    ),
    "FARM_PUBLISH_PUBLIC_BASE_URL not a URL": Case(
        argv=("publish", CELL), env={"FARM_PUBLISH_PUBLIC_BASE_URL": "x y"}, says="public-base-url"
    ),
    "publish.bucket in the matrix Bad_Bucket": Case(
        argv=("publish", CELL), edit=_set("publish", "bucket", value="Bad_Bucket"), says="bucket"
    ),
    "publish.public_base_url in the matrix not a URL": Case(
        argv=("publish", CELL),
        edit=_set("publish", "public_base_url", value="x"),
        says="public-base-url",
    ),
    "nightly --jobs 0": Case(argv=("nightly", "--jobs", "0"), says="--jobs"),
    "nightly --jobs 1000": Case(argv=("nightly", "--jobs", "1000"), says="--jobs"),
    "nightly --memory nan": Case(argv=("nightly", "--memory", "nan"), says="--memory"),
    "nightly --timeout -1": Case(argv=("nightly", "--timeout", "-1"), says="--timeout"),
    "nightly --transfer ftp": Case(argv=("nightly", "--transfer", "ftp"), says="--transfer"),
    "nightly --profile unknown": Case(
        argv=("nightly", "--profile", "turbo", "--dry-run"), says="turbo"
    ),
    "nightly: a selector matching nothing": Case(argv=("nightly", "4.*"), says="matches no cell"),
    "nightly --dry-run, no engine": Case(
        argv=("nightly", "--dry-run", CELL), code=11, says="could not be planned"
    ),
    "nightly --bucket ''": Case(argv=("nightly", "--bucket", ""), says="bucket"),
    "check-manifest: a selector matching nothing": Case(
        argv=("check-manifest", "4.*"), says="matches no cell"
    ),
    "check-manifest: nothing published": Case(
        argv=("check-manifest", CELL), code=10, says="problem"
    ),
    "check-manifest --prefix ../x": Case(
        argv=("check-manifest", "--prefix", "../x"), says="prefix"
    ),
    "check-manifest --endpoint-url http://[::1/": Case(
        argv=("check-manifest", "--endpoint-url", "http://[::1/"), says="endpoint-url"
    ),
    "verify with no target": Case(argv=("verify",), says="TARGETS"),
    "verify --jobs 0": Case(argv=("verify", CELL, "--jobs", "0"), says="--jobs"),
    "verify a missing archive": Case(
        argv=("verify", "python-3.13.5-debian-12-amd64.tar.zst"), says="no such file"
    ),
    "verify a cell that is not built": Case(argv=("verify", CELL), says="no such file"),
    "verify a selector matching nothing": Case(argv=("verify", "4.*"), says="matches no cell"),
    "verify: a good archive, no engine": Case(setup=_record(), code=5, says="Docker engine"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_hostile_value_is_refused_in_one_line(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    work = make_work(tmp_path / "work")
    if case.edit is not None:
        work.edit_matrix(case.edit)
    if case.text is not None:
        work.matrix.write_text(case.text(work.matrix.read_text()))
    argv = case.setup(work) if case.setup is not None else list(case.argv)
    before = tree_state(REPO)
    outcome = run_in_process(argv, work, env=case.env)
    problems = problems_of(outcome) + outside_changes(work, before)
    lines = error_lines(outcome)
    if case.code is not None and outcome.code != case.code:
        problems.append(f"exit {outcome.code}, expected {case.code}")
    if lines and case.says not in lines[0]:
        problems.append(f"the error line does not say {case.says!r}")
    TALLY.add(outcome, problems, case=name)
    assert not problems, f"{name}: {problems}\n{outcome.describe()}"
