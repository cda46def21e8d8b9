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
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from orchestrator.errors import ConfigError
from orchestrator.fsutil import read_regular, write_atomic
from orchestrator.matrix.loader import MAX_MATRIX_BYTES, parse_matrix


@dataclass(frozen=True, kw_only=True)
class NewPin:
    version: str
    sha256: str
    filename: str | None  # None: upstream's default name, Python-{version}.tar.xz
    size: int | None = None  # bytes, when the feed states it
    comment: str  # provenance, written on the line above the entry


_INDENT = 2  # matrix.yaml's list items start at column 2, so do their comments


def _yaml() -> YAML:
    yaml = YAML()  # round-trip
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    # matrix.yaml's own style: mappings by 2, sequence items "  - " under their key.
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


# ruamel keeps the comments and blank lines that follow a list item (so: the comment above
# the next item, or the blank line after the list) on the item's last key. Inserting or
# removing an item must move that text along, or it would be lost or land elsewhere.


def _trailing(item: CommentedMap) -> CommentToken | None:
    slot = item.ca.items.get(list(item)[-1]) if len(item) else None
    return slot[2] if slot else None


def _set_trailing(item: CommentedMap, token: CommentToken | None) -> None:
    slot = item.ca.items.setdefault(list(item)[-1], [None, None, None, None])
    slot[2] = token


def _comment_token(text: str, indent: int) -> CommentToken:
    lines = "".join(f"{' ' * indent}# {line}\n" for line in text.splitlines())
    return CommentToken("\n" + lines, CommentMark(0))


def _insert(items: CommentedSeq, position: int, entry: CommentedMap, comment: str) -> None:
    """Insert `entry` with `comment` on the line above it."""
    if position == 0:
        items.insert(0, entry)
        items.yaml_set_comment_before_after_key(0, before=comment, indent=_INDENT)
        return
    previous = items[position - 1]
    # What followed the previous item now follows the new one; the comment sits between.
    _set_trailing(entry, _trailing(previous))
    _set_trailing(previous, _comment_token(comment, _INDENT))
    items.insert(position, entry)


def _delete(items: CommentedSeq, position: int) -> None:
    """Remove an item with the comment above it, keeping what followed it."""
    following = _trailing(items[position])
    if position > 0:
        _set_trailing(items[position - 1], following)
    del items[position]
    if position == 0 and following is not None and len(items):
        comments = [
            line.strip().removeprefix("#").strip()
            for line in following.value.splitlines()
            if line.strip().startswith("#")
        ]
        if comments:
            items.yaml_set_comment_before_after_key(0, before="\n".join(comments), indent=_INDENT)


def edited_text(text: str, *, add: Sequence[NewPin], drop: Sequence[str]) -> str:
    """`text` with pins added to and removed from `pythons`; everything else byte-identical."""
    yaml = _yaml()
    try:
        document = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"matrix.yaml cannot be edited: invalid YAML ({exc})") from None
    pythons = document.get("pythons") if isinstance(document, CommentedMap) else None
    if not isinstance(pythons, CommentedSeq) or not all(
        isinstance(item, CommentedMap) and "version" in item for item in pythons
    ):
        raise ConfigError("matrix.yaml has no `pythons:` list of {version: ...} entries to update")
    existing = {str(item["version"]) for item in pythons}
    for pin in add:
        if pin.version in existing:
            raise ConfigError(f"pythons already pins {pin.version}; pins are never changed")
    for version in drop:
        position = next(
            (i for i, item in enumerate(pythons) if str(item["version"]) == version), None
        )
        if position is not None:
            _delete(pythons, position)
    for pin in sorted(add, key=lambda p: Version(p.version)):
        entry = CommentedMap()
        entry["version"] = DoubleQuotedScalarString(pin.version)
        if pin.filename is not None:
            entry["filename"] = pin.filename
        entry["sha256"] = pin.sha256
        if pin.size is not None:
            entry["size"] = pin.size
        # Keep versions ascending: after the last pin that is older.
        position = sum(
            1 for item in pythons if Version(str(item["version"])) < Version(pin.version)
        )
        _insert(pythons, position, entry, pin.comment)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def update_pins(path: Path, *, add: Sequence[NewPin], drop: Sequence[str]) -> str:
    """Rewrite `path` with the pins changed; returns the new text. The result must be a valid
    matrix, or nothing is written."""
    text = read_regular(path, limit=MAX_MATRIX_BYTES).decode("utf-8", errors="strict")
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
