"""S3Store's deadline per operation, offline: the client's timeouts and the retry policy's stop.

The store's calls are driven with a function that fails like botocore does when an endpoint
does not answer; no request leaves the process (the endpoint is never contacted)."""

from __future__ import annotations

from pathlib import Path

import botocore.exceptions
import pytest

from orchestrator.errors import PublishError
from orchestrator.matrix.schema import PublishSettings
from orchestrator.publish.s3store import CONNECT_TIMEOUT, READ_TIMEOUT, S3Store, attempt_timeouts
from orchestrator.publish.target import open_store, resolve_target


def _store(deadline: float, attempts: int = 6) -> S3Store:
    return S3Store(
        bucket="farm",
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        deadline=deadline,
        attempts=attempts,
        max_wait=0,  # no backoff sleep: the counts below do not depend on the clock
    )


def test_attempt_timeouts_never_exceed_the_deadline() -> None:
    assert attempt_timeouts(600) == (CONNECT_TIMEOUT, READ_TIMEOUT)
    assert attempt_timeouts(2) == (2, 2)
    assert attempt_timeouts(30) == (CONNECT_TIMEOUT, 30)


def test_the_client_uses_them_and_botocore_does_not_retry() -> None:
    config = _store(deadline=3).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 3)
    assert config.retries["total_max_attempts"] == 1


def _hung(calls: list[int]) -> None:
    calls.append(1)
    raise botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1:9/farm/k")


def test_no_retry_starts_after_the_deadline() -> None:
    calls: list[int] = []
    with pytest.raises(PublishError) as info:
        _store(deadline=1e-9)._call("HeadObject", "k", lambda: _hung(calls))
    assert len(calls) == 1  # the deadline had passed when the first attempt failed
    error = info.value
    assert error.message.startswith("HeadObject s3://farm/k failed: Read timeout on endpoint URL")
    assert error.hint is not None
    assert "gave up after 1 attempt within the 1e-09s deadline per operation" in error.hint
    assert "publish.deadline_seconds" in error.hint
    assert "\n" not in str(error)


def test_within_the_deadline_the_attempts_still_bound_the_retries() -> None:
    calls: list[int] = []
    with pytest.raises(PublishError, match="gave up after 3 attempts within the 3600s"):
        _store(deadline=3600, attempts=3)._call("GetObject", "k", lambda: _hung(calls))
    assert len(calls) == 3


def test_the_deadline_comes_from_matrix_yaml(tmp_path: Path) -> None:
    settings = PublishSettings(bucket="farm", endpoint_url="http://127.0.0.1:9", deadline_seconds=7)
    target = resolve_target(settings, root=tmp_path, out_dir=tmp_path)
    assert target.deadline == 7
    store = open_store(target)
    assert isinstance(store, S3Store) and store.deadline == 7
    assert store.client.meta.config.read_timeout == 7
