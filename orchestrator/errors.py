"""One error hierarchy for the farm; each kind maps to a distinct process exit code.

Library code raises these; only the CLI turns them into a message and an exit status.
Every message says what happened and what to do about it.
"""

from __future__ import annotations


class FarmError(Exception):
    """Base of every expected failure. `exit_code` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(FarmError):
    """matrix.yaml (or a CLI argument naming part of it) is wrong."""

    exit_code = 2


class SelectionError(ConfigError):
    """A cell id or selector matches nothing in the matrix."""


class FileRefused(ConfigError):
    """A file the user named (or put where the farm reads) is not a regular file, is over its
    size limit, or cannot be read: refused before a byte of it was read (fsutil.read_regular).
    `missing` tells "no such file" apart, which callers often word their own way; callers
    re-raise it as their stage's error where that has another exit code."""

    def __init__(self, path: object, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing


class RenderCheckError(FarmError):
    """Rendered Dockerfiles differ from what the templates produce."""

    exit_code = 3


class SourceError(FarmError):
    """A CPython source tarball could not be fetched or failed verification."""

    exit_code = 4


class SignatureError(SourceError):
    """A source tarball's upstream signature is bad, from a key or identity not pinned for its
    version, or missing when the matrix requires one."""


class DockerError(FarmError):
    """The Docker engine is unreachable or refused a request (infrastructure, retryable)."""

    exit_code = 5


class ImageBuildError(FarmError):
    """A builder or run image failed to build."""

    exit_code = 6


class CellBuildError(FarmError):
    """Compiling CPython inside a cell's container failed (not retried)."""

    exit_code = 7


class PackagingError(FarmError):
    """The install tree could not be packed into an archive."""

    exit_code = 8


class VerificationError(FarmError):
    """A packed runtime failed verification (or could not be verified); nothing is published."""

    exit_code = 9


class Interrupted(FarmError):
    """The run was cancelled (Ctrl-C / SIGTERM); containers were removed."""

    exit_code = 130


class PublishError(FarmError):
    """Publishing to the object store failed or was refused; manifests were left unchanged."""

    exit_code = 10


class RunFailed(FarmError):
    """A multi-cell run finished with failed or cancelled cells (see its summary)."""

    exit_code = 11


class FeedError(FarmError):
    """A release feed answered with malformed data, or two feeds disagree on a tarball's hash;
    matrix.yaml was left unchanged."""

    exit_code = 12


class OutputError(FarmError):
    """A file could not be written (disk full, read-only, permissions); nothing half-written
    was left in its place."""

    exit_code = 13


class UnsafeArchiveError(FarmError):
    """A tar from an untrusted source (a build container, an archive read back) holds
    something that could escape or exhaust the place it is read into; nothing was kept."""

    exit_code = 14


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` on one line: control characters (newlines, NUL, escape sequences, the Unicode
    line separators) and the surrogates of undecodable path bytes shown as escapes. Every
    error message passes through this before it is printed, since messages echo input (a
    path, a key, a value) that may hold any of them."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif (
            code < 0x20
            or 0x7F <= code < 0xA0
            or code in (0x2028, 0x2029)
            or 0xD800 <= code < 0xE000  # surrogates: undecodable bytes of a path
        ):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
