"""`orchestrator versions` against real feeds: Debian's live source index over the network, and
a python.org-shaped release API served from 127.0.0.1 with data in the API's real format."""

from __future__ import annotations

import difflib
import hashlib
import json
import lzma
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from orchestrator.matrix import load_matrix
from orchestrator.render import stale_files
from tests.feeds_support import DebianPackage, PythonOrgRelease, python_org_api, write_debian_suite
from tests.integration.support import REPO_ROOT, run_cli

pytestmark = pytest.mark.integration

SID_SOURCES = "http://deb.debian.org/debian/dists/sid/main/source/Sources.xz"


def test_versions_finds_newer_313_in_debians_real_index() -> None:
    result = run_cli(["versions", "--format", "json"], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    row = next(r for r in report["minors"] if r["minor"] == "3.13")
    assert Version(row["newest"]) > Version("3.13.5")
    assert re.fullmatch(r"[0-9a-f]{64}", row["newest_sha256"])
    # The same hash as Debian's index states for that upstream tarball, read independently.
    with urllib.request.urlopen(SID_SOURCES, timeout=120) as response:
        text = lzma.decompress(response.read()).decode()
    orig = f"python3.13_{row['newest']}.orig.tar.xz"
    listed = re.search(rf"^ ([0-9a-f]{{64}}) (\d+) {re.escape(orig)}$", text, re.MULTILINE)
    assert listed is not None, f"{orig} not in {SID_SOURCES}"
    assert row["newest_sha256"] == listed.group(1)
    assert row["newest_size"] == int(listed.group(2))
    debian = next(f for f in report["feeds"] if f["name"] == "debian-sid")
    assert debian["unavailable"] is None and debian["releases"] > 0


# --- a python.org-shaped API on loopback -----------------------------------------------------


@dataclass
class ApiState:
    documents: dict[str, bytes] = field(default_factory=dict)
    # path -> "truncate" (Content-Length says more than is sent) or "garbage" (cut JSON)
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class _ApiServer(ThreadingHTTPServer):
    state: ApiState


class _ApiHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _ApiServer)
        state = self.server.state
        state.requests.append(self.path)
        body = state.documents.get(self.path)
        if body is None:
            self.send_error(404)
            return
        fault = state.faults.get(self.path)
        if fault == "garbage":
            body = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
        if fault == "truncate":
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, ApiState]]:
    server = _ApiServer(("127.0.0.1", 0), _ApiHandler)
    server.state = ApiState()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v2/downloads/", server.state
    finally:
        server.shutdown()
        server.server_close()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _with_feeds(matrix: Path, feeds_yaml: str) -> str:
    """The copy's release_feeds replaced by `feeds_yaml`; returns the new text (written)."""
    text = matrix.read_text()
    text, count = re.subn(
        r"  release_feeds:\n(?:    .*\n|      .*\n)+", f"  release_feeds:\n{feeds_yaml}", text
    )
    assert count == 1
    matrix.write_text(text)
    return text


def _next_patches(matrix: Path) -> dict[str, str]:
    """For each pinned minor, a patch newer than anything pinned (so the test outlives today's
    pins)."""
    newest: dict[str, Version] = {}
    for python in load_matrix(matrix).model.pythons:
        newest[python.major_minor] = max(
            newest.get(python.major_minor, python.parsed), python.parsed
        )
    return {minor: f"{minor}.{v.micro + 1}" for minor, v in newest.items()}


def _cli(project: Path, *args: str) -> Any:
    return run_cli(["--matrix", str(project / "matrix.yaml"), *args], cwd=project)


def test_discovery_and_update_keep_the_matrix_intact(
    project_copy: Path, api: tuple[str, ApiState]
) -> None:
    base, state = api
    matrix = project_copy / "matrix.yaml"
    before = _with_feeds(matrix, f"    - kind: python.org\n      url: {base}\n")
    nxt = _next_patches(matrix)
    # A size per release, as python.org's `filesize` states it (bytes).
    sizes = {v: 20_000_000 + i for i, v in enumerate(nxt.values())}
    releases = [PythonOrgRelease(version=v, xz_sha256=_sha(v), tgz_sha256=_sha(v + "tgz"),
                                 filesize=sizes[v])
                for v in nxt.values()]  # fmt: skip
    releases += [
        PythonOrgRelease(version="3.99.0a1", xz_sha256=_sha("3.99.0a1")),
        PythonOrgRelease(version="3.98.1", xz_sha256=""),  # before sha256_sum existed
    ]
    state.documents.update(python_org_api(releases))

    shown = _cli(project_copy, "versions", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["minor"]: r for r in json.loads(shown.stdout)["minors"]}
    for minor, version in nxt.items():
        assert (rows[minor]["newest"], rows[minor]["status"]) == (version, "stale")
        assert rows[minor]["newest_sha256"] == _sha(version)
        assert rows[minor]["newest_size"] == sizes[version]
    assert rows["3.99"]["status"] == "prerelease"
    assert "3.98" not in rows  # no sha256 published: not a release the farm can pin
    assert matrix.read_text() == before  # reporting writes nothing

    updated = _cli(project_copy, "versions", "--update")
    assert updated.returncode == 0, updated.stderr
    after = matrix.read_text()
    diff = list(difflib.ndiff(before.splitlines(True), after.splitlines(True)))
    assert [line for line in diff if line.startswith("- ")] == []
    added = [line[2:] for line in diff if line.startswith("+ ")]
    assert len(added) == 4 * len(nxt)  # provenance comment, version, sha256, size per new pin
    for version in nxt.values():
        assert f'  - version: "{version}"\n' in added
        assert f"    sha256: {_sha(version)}\n" in added
        assert f"    size: {sizes[version]}\n" in added
        assert any(
            line.startswith(f"  # {version} from release feed python.org:") for line in added
        )
        assert f"added   {version}" in updated.stdout
    assert "&ubuntu_build" in after and "*run_t64" in after
    assert after.count("\n#") == before.count("\n#")  # every comment still there
    # The result loads, plans, and its rendered Dockerfiles are current.
    planned = _cli(project_copy, "plan", *(f"{v}-debian-12-amd64" for v in nxt.values()))
    assert planned.returncode == 0, planned.stderr
    assert stale_files(load_matrix(matrix)) == []
    again = _cli(project_copy, "versions", "--update")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert matrix.read_text() == after


def test_feeds_that_disagree_stop_the_update(
    project_copy: Path, api: tuple[str, ApiState], tmp_path: Path
) -> None:
    base, state = api
    matrix = project_copy / "matrix.yaml"
    archive = tmp_path / "debian"
    nxt = _next_patches(project_copy / "matrix.yaml")
    version = nxt["3.13"]
    write_debian_suite(
        archive,
        "sid",
        [DebianPackage(package="python3.13", version=f"{version}-1", orig_sha256=_sha("debian"))],
    )
    before = _with_feeds(
        matrix,
        f"    - kind: python.org\n      url: {base}\n"
        f"    - kind: debian-sources\n      name: debian-sid\n"
        f"      archive: {archive.as_uri()}\n      suite: sid\n",
    )
    state.documents.update(
        python_org_api([PythonOrgRelease(version=version, xz_sha256=_sha("org"))])
    )
    result = _cli(project_copy, "versions", "--update")
    assert result.returncode == 12, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert f"feeds disagree on Python-{version}.tar.xz" in error[0]
    assert (
        f"python.org says {_sha('org')}" in error[0]
        and f"debian-sid says {_sha('debian')}" in error[0]
    )
    assert "Traceback" not in result.stderr
    assert matrix.read_text() == before


@pytest.mark.parametrize("fault", ["garbage", "truncate"])
def test_malformed_or_truncated_feed_is_one_line_and_writes_nothing(
    project_copy: Path, api: tuple[str, ApiState], fault: str
) -> None:
    base, state = api
    matrix = project_copy / "matrix.yaml"
    before = _with_feeds(matrix, f"    - kind: python.org\n      url: {base}\n")
    documents = python_org_api([PythonOrgRelease(version="3.13.99", xz_sha256=_sha("x"))])
    state.documents.update(documents)
    files_path = next(p for p in documents if "release_file" in p)
    state.faults[files_path] = fault
    result = _cli(project_copy, "versions", "--update")
    assert result.returncode == 12, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert ("is not JSON" if fault == "garbage" else "was cut short") in errors[0]
    assert matrix.read_text() == before


def test_unreachable_feed_is_skipped_with_a_note(project_copy: Path, tmp_path: Path) -> None:
    matrix = project_copy / "matrix.yaml"
    archive = tmp_path / "debian"
    write_debian_suite(
        archive,
        "sid",
        [DebianPackage(package="python3.13", version="3.13.99-1", orig_sha256=_sha("d"))],
    )
    _with_feeds(
        matrix,
        "    - kind: python.org\n      url: http://127.0.0.1:9/api/v2/downloads/\n"
        f"    - kind: debian-sources\n      name: debian-sid\n"
        f"      archive: {archive.as_uri()}\n      suite: sid\n",
    )
    result = _cli(project_copy, "versions")
    assert result.returncode == 0, result.stderr
    assert "python.org: unavailable (" in result.stderr and "connection refused" in result.stderr
    assert "3.13.99" in result.stdout
