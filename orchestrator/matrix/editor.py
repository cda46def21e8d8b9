"""Edit matrix.yaml in place without disturbing it: comments, order, anchors and quoting stay
as they are (ruamel.yaml's round-trip mode); only the pins asked for are added or removed.

The new text is validated with the real loader before it replaces the file, atomically, so a
failed edit leaves matrix.yaml untouched.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from orchestrator.errors import ConfigError
from orchestrator.fsutil import write_atomic
from orchestrator.matrix.loader import parse_matrix


@dataclass(frozen=True, kw_only=True)
class NewPin:
    version: str
    sha256: str
    filename: str | None  # None: upstream's default name, Python-{version}.tar.xz
    comment: str  # provenance, written on the line above the entry


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    # matrix.yaml's own style: mappings by 2, sequence items "  - " under their key.
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def edited_text(text: str, *, add: Sequence[NewPin], drop: Sequence[str]) -> str:
    """`text` with pins added to and removed from `pythons`; everything else byte-identical."""
    yaml = _yaml()
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"matrix.yaml cannot be edited: invalid YAML ({exc})") from None
    pythons = document.get("pythons") if isinstance(document, CommentedMap) else None
    if not isinstance(pythons, CommentedSeq):
        raise ConfigError("matrix.yaml has no `pythons:` list to update")
    existing = {str(item.get("version")) for item in pythons if isinstance(item, CommentedMap)}
    for pin in add:
        if pin.version in existing:
            raise ConfigError(f"pythons already pins {pin.version}; pins are never changed")
    for version in drop:
        position = next(
            (i for i, item in enumerate(pythons) if str(item.get("version")) == version), None
        )
        if position is not None:
            del pythons[position]
    for pin in sorted(add, key=lambda p: Version(p.version)):
        entry = CommentedMap()
        entry["version"] = DoubleQuotedScalarString(pin.version)
        if pin.filename is not None:
            entry["filename"] = pin.filename
        entry["sha256"] = pin.sha256
        # Keep versions ascending: after the last pin that is older.
        position = 0
        for index, item in enumerate(pythons):
            if Version(str(item.get("version"))) < Version(pin.version):
                position = index + 1
        pythons.insert(position, entry)
        pythons.yaml_set_comment_before_after_key(position, before=pin.comment, indent=2)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def update_pins(path: Path, *, add: Sequence[NewPin], drop: Sequence[str]) -> str:
    """Rewrite `path` with the pins changed; returns the new text. The result must be a valid
    matrix, or nothing is written."""
    text = path.read_text(encoding="utf-8")
    new_text = edited_text(text, add=add, drop=drop)
    try:
        parse_matrix(new_text, path)
    except ConfigError as exc:
        raise ConfigError(
            f"the updated matrix would not be valid, so {path.name} was left unchanged: "
            f"{exc.message}",
            hint=exc.hint,
        ) from None
    write_atomic(path, new_text.encode("utf-8"))
    return new_text
