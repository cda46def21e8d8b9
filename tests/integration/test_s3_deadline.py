"""An S3 endpoint that accepts connections and never answers (finding 6 of issue 10): every
operation gives up at its deadline with one line, instead of retrying for minutes.

The endpoint is a real TCP listener on 127.0.0.1 that accepts and then holds each connection
without reading or writing; what is asserted is how many connections the farm opened and what
it printed, not how long it took."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.errors import PublishError
from orchestrator.publish.s3store import S3Store
from tests.integration.conftest import FAKE_AWS_ENV
from tests.integration.support import E2E_CELL, REPO_ROOT, run_cli

pytestmark = pytest.mark.integration

GUARD = 120  # seconds: only so that a regression fails instead of hanging the suite


class SilentEndpoint:
    """Accepts every connection and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent() -> Iterator[SilentEndpoint]:
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_an_operation_stops_at_its_deadline(silent: SilentEndpoint) -> None:
    store = S3Store(bucket="farm", region="us-east-1", endpoint_url=silent.url, deadline=1.5)
    with pytest.raises(PublishError) as info:
        store.get("runtimes/manifest.json")
    error = info.value
    assert error.message == (
        f"GetObject s3://farm/runtimes/manifest.json failed: Read timeout on endpoint URL: "
        f'"{silent.url}/farm/runtimes/manifest.json"'
    )
    assert error.hint is not None
    assert error.hint.startswith("gave up after 1 attempt within the 1.5s deadline per operation")
    # One attempt: the read timeout is capped by the deadline, and none starts after it.
    assert len(silent.held) == 1


def test_the_cli_says_it_in_one_line_with_the_matrix_deadline(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    data = yaml.safe_load((REPO_ROOT / "matrix.yaml").read_text())
    data["publish"] = {"region": "us-east-1", "deadline_seconds": 2}
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_cli(
        ["--matrix", str(tmp_path / "matrix.yaml"), "--out", str(tmp_path / "out"),
         "check-manifest", E2E_CELL, "--bucket", "farm", "--endpoint-url", silent.url],
        cwd=tmp_path,
        env={**FAKE_AWS_ENV, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"},
        timeout=GUARD,
    )  # fmt: skip
    assert result.returncode == 10, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("error: GetObject s3://farm/manifest.json failed: Read timeout")
    assert "gave up after 1 attempt within the 2s deadline per operation" in errors[0]
    assert "(publish.deadline_seconds)" in errors[0]
    assert len(silent.held) == 1
