"""The metadata record `verify` reads beside an archive it did not just build.

The record is a local file anyone can edit or replace, and what verification takes from it
decides which images run, which modules must import and what the archive's checksum must be.
So it is read like every file the farm did not write (fsutil.read_regular: a regular file, a
size limit) and validated before any of it is used: a damaged or foreign record is one line
naming the field, never a KeyError or an unknown arch deep in verification.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
)

from orchestrator.errors import FileRefused, VerificationError, one_line
from orchestrator.fsutil import MAX_RECORD_BYTES, read_regular
from orchestrator.matrix import Arch, VariantName
from orchestrator.matrix.schema import MODULE_NAME, STACK_NAME_PATTERN, VERSION_PATTERN


class VerifiedRecord(BaseModel):
    """What verification reads from a record; the rest is passed on untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    arch: Arch
    major: Literal[3]
    minor: Annotated[StrictInt, Field(ge=0, le=999)]
    version: Annotated[str, StringConstraints(pattern=rf"^{VERSION_PATTERN}$")]
    stack: Annotated[str, StringConstraints(pattern=STACK_NAME_PATTERN)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    expected_modules: Annotated[
        list[Annotated[str, StringConstraints(pattern=rf"^{MODULE_NAME}$")]],
        Field(max_length=1000),
    ]
    variant: VariantName = VariantName.DEFAULT
    cell: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]{1,100}$")] | None = None
    profile: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")] | None = None
    configure_args: (
        Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=100)] | None
    ) = None
    jit: StrictBool = False


def read_record(path: Path, *, archive_name: str) -> dict[str, Any]:
    """The record at `path` (beside `archive_name`), validated; VerificationError otherwise."""
    try:
        raw = read_regular(path, limit=MAX_RECORD_BYTES)
    except FileRefused as exc:
        if exc.missing:
            raise VerificationError(
                f"{path}: no metadata record beside {archive_name}",
                hint="verification needs the .json the build wrote; rebuild the cell",
            ) from None
        raise VerificationError(str(exc)) from None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise VerificationError(f"{path}: unreadable metadata record: {reason}") from None
    if not isinstance(record, dict):
        raise VerificationError(f"{path}: not a metadata record of the farm (not an object)")
    try:
        VerifiedRecord.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "record"
        raise VerificationError(
            f"{path}: not a metadata record of the farm ({one_line(field)[:80]}: {first['msg']})",
            hint="verification needs the .json the build wrote; rebuild the cell",
        ) from None
    return record
