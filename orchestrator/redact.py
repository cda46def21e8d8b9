"""Redact anything credential-shaped before it reaches a log, a report or a step summary.

Credentials never enter build containers, but a build log also holds what upstream's scripts
print, and error messages can quote URLs and headers. Shapes, not known values: the farm may
not know every secret it is handed (an SSO session, a proxy's password in a URL).
"""

from __future__ import annotations

import re

REDACTED = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # AWS access key ids (long-term AKIA, temporary ASIA).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    # name=value / name: value where the name says secret (aws_secret_access_key, token, ...);
    # not a path's last part (`/etc/passwd': hard link` is a file name, not a secret).
    (
        re.compile(
            r"(?i)(?<![/.-])\b([A-Z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|SESSION_KEY|API_KEY)"
            r"[A-Z0-9_]*[\"']?\s*[=:]\s*[\"']?)([^\s\"',;&]+)"
        ),
        rf"\1{REDACTED}",
    ),
    # Authorization headers (AWS SigV4, Bearer, Basic).
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\n]+"), rf"\1{REDACTED}"),
    # user:password@ in URLs.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), rf"\1{REDACTED}@"),
    # GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_).
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b"), REDACTED),
    # Signed URL query parameters (presigned S3 URLs).
    (
        re.compile(
            r"(?i)([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature)=)[^&\s]+"
        ),
        rf"\1{REDACTED}",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
