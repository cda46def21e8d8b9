"""The pieces of the S3 harness that are not fixtures: S3Server (a handle on a running server),
answers_http (the readiness probe) and running_s3_server (starts `python -m tests.s3.server` as
a child process, for tests that need a server of their own).

Kept apart from conftest_plugin so test modules can import them without importing the plugin
module before pytest registers it (which would skip pytest's assertion rewriting there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 30.0
DUMMY_KEY = "testing"  # moto accepts any credentials; these just let botocore sign


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server on loopback."""

    endpoint_url: str  # http://127.0.0.1:PORT
    region: str = "us-east-1"

    @property
    def port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def client(self, *, endpoint_url: str | None = None, config: Config | None = None) -> S3Client:
        """A boto3 S3 client for this server (or for `endpoint_url`, e.g. a FaultProxy's url).

        Credentials are passed to the client, not put in os.environ. Path-style addressing,
        because bucket.127.0.0.1 does not resolve. `config` is merged over the defaults, e.g.
        Config(retries={"total_max_attempts": 1}) to see injected faults unretried.
        """
        base = Config(
            region_name=self.region,
            s3={"addressing_style": "path"},
            # Never route loopback traffic through a proxy from the caller's environment.
            proxies={},
            connect_timeout=10,
            read_timeout=60,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_KEY,
            config=base.merge(config) if config is not None else base,
        )

    def env(self, *, endpoint_url: str | None = None) -> dict[str, str]:
        """Environment variables for a child process (e.g. the CLI) that talks to this server.

        AWS_ENDPOINT_URL_S3 makes any boto3 client without an explicit endpoint_url use this
        server; pass `endpoint_url=fault_proxy.url` to send the child through the proxy.
        """
        return {
            "AWS_ACCESS_KEY_ID": DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": endpoint_url or self.endpoint_url,
            # Keep ~/.aws out of the picture: a developer's real profile must not leak in.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def allow_anonymous_reads(self, bucket: str) -> None:
        """Give `bucket` a public-read bucket policy, as the production bucket has for uv.

        moto, like S3, refuses unsigned GETs (403) of objects that neither a bucket policy nor
        a public-read ACL opens up. s3:HeadObject is moto-only (it checks HEAD against that
        action; S3 checks HEAD against s3:GetObject): never copy it into a real policy.
        """
        statement = {
            "Sid": "AnonymousRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:HeadObject"],
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        self.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))

    def object_url(self, bucket: str, key: str) -> str:
        """Path-style URL of an object, as an anonymous HTTP client (uv) would fetch it."""
        return f"{self.endpoint_url}/{bucket}/{key}"


def answers_http(port: int, *, host: str = "127.0.0.1") -> bool:
    conn = HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def running_s3_server(workdir: Path, *server_args: str) -> Iterator[S3Server]:
    """Run `python -m tests.s3.server` (plus `server_args`) until the with-block ends.

    For tests that need a server of their own (say, with --race-window); the shared s3_server
    fixture is a compose service instead. Its log is `workdir/server.log`.
    """
    process, server = _start_server(workdir, server_args)
    try:
        yield server
    finally:
        _stop(process)


def _start_server(
    workdir: Path, server_args: Sequence[str]
) -> tuple[subprocess.Popen[bytes], S3Server]:
    port_file = workdir / "port"
    log_path = workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "tests.s3.server",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, *server_args],
            cwd=REPO_ROOT,  # so `-m tests.s3.server` resolves
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        # The launcher writes the file only once listening; the GET proves moto is serving.
        if port_file.exists():
            port = int(port_file.read_text())
            if answers_http(port):
                return process, S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        time.sleep(0.1)
    if process.poll() is not None:
        reason = f"exited with code {process.returncode}"
    else:
        reason = f"did not answer HTTP within {STARTUP_TIMEOUT_S:.0f} s"
        _stop(process)
    log_tail = log_path.read_text(errors="replace")[-4000:]
    pytest.fail(
        f"the test S3 server (python -m tests.s3.server) {reason}; is moto[server] installed "
        f"(pip install -e '.[dev]')?\n--- {log_path} ---\n{log_tail}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
