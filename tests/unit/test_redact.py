"""Credential-shaped text never reaches a log, report or step summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.progress import CellOutcome, append_step_summary, write_report
from orchestrator.redact import REDACTED, redact

FAKE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key id
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"using key {FAKE_KEY_ID}", FAKE_KEY_ID),
        (f"AWS_SECRET_ACCESS_KEY={FAKE_SECRET}", FAKE_SECRET),
        (f"aws_secret_access_key = {FAKE_SECRET}", FAKE_SECRET),
        ('{"SessionToken": "FwoGZXIvYXdzEBYaDabc123"}', "FwoGZXIvYXdzEBYaDabc123"),
        ("Authorization: AWS4-HMAC-SHA256 Credential=x/y, Signature=abcdef", "abcdef"),
        ("GET https://farm:hunter2@proxy.example:3128/x", "hunter2"),
        ("token ghp_" + "a" * 36, "ghp_" + "a" * 36),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&x=1", "deadbeef"),
        ("GITHUB_TOKEN: ghs_abcdefghijklmnopqrstuvwxyz0123456789", "ghs_abcdef"),
    ],
)
def test_credential_shapes_are_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "==> make -j2",
        "sha256 071e8551fce2ba216606f040fc5f695d2cf832cac5c8414deb1adb72e20d84d1",
        "gcc -fstack-protector-strong -Wformat -Werror=format-security -c Python/ceval.c",
        "checking for --with-tokens... no",
        "https://www.python.org/ftp/python/3.13.5/Python-3.13.5.tar.xz",
        "refused: member 'etc/passwd': hard link to /etc/passwd escapes the tree",
    ],
)
def test_ordinary_build_output_is_left_alone(text: str) -> None:
    assert redact(text) == text


def _outcome() -> CellOutcome:
    return CellOutcome(
        cell="3.13.5-debian-12-amd64",
        result="failed",
        seconds=1.0,
        reason=f"upload refused for {FAKE_KEY_ID}: aws_secret_access_key={FAKE_SECRET}",
    )


def test_reports_and_step_summaries_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report.json"
    write_report(report, [_outcome()], seconds=1.0)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    append_step_summary([_outcome()])
    for text in (report.read_text(), summary.read_text()):
        assert FAKE_KEY_ID not in text and FAKE_SECRET not in text
    json.loads(report.read_text())
