"""pytest fixtures for real-HTTP S3 tests. Register from tests/conftest.py with

    pytest_plugins = ["tests.s3.conftest_plugin"]

Fixtures:
    s3_server    (session)  moto's S3 in a child process on 127.0.0.1; see S3Server
    s3_bucket    (function) name of a fresh, empty bucket on that server
    fault_proxy  (function) a FaultProxy forwarding to s3_server, for failure injection
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.s3.fault_proxy import FaultProxy
from tests.s3.harness import S3Server, running_s3_server

__all__ = ["S3Server", "fault_proxy", "s3_bucket", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 over real HTTP in a child process, shared by the whole session."""
    with running_s3_server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh bucket with a unique name; the server (and its data) goes away at session end."""
    name = f"farm-test-{uuid.uuid4().hex[:16]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def fault_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A FaultProxy in front of s3_server; point clients at fault_proxy.url."""
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield proxy
