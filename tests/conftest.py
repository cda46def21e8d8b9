"""Shared fixtures. Unit tests never touch Docker or the network; integration tests are
marked and need a real engine (see tests/integration/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# The S3 test server (moto over HTTP) and the fault-injecting proxy.
pytest_plugins = ["tests.s3.conftest_plugin"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
