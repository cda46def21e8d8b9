"""The store's JSON documents as read back: manifest.json and uv's download-metadata.json.

Stores hand out at most MAX_DOCUMENT_BYTES of a document (publish/store.py); here every
entry is validated against the record schema (publish/record.py) before anything merges into
it, so one damaged entry stops publishing with a line naming it and nothing is written.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.errors import PublishError
from orchestrator.publish.manifests import REPAIR_HINT
from orchestrator.publish.record import manifest_entry_damage, uv_entry_damage


def parse_document(where: str, body: bytes) -> dict[str, Any]:
    """A JSON document read back from the store; a damaged one is a PublishError naming it,
    so one bad object stops with a line that says what to repair, not a traceback."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PublishError(f"{where} is not valid UTF-8 JSON ({exc})", hint=REPAIR_HINT) from None
    if not isinstance(document, dict):
        raise PublishError(f"{where} is not a JSON object", hint=REPAIR_HINT)
    return document


def named_runtimes(where: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """manifest.json's runtimes: a list of objects, each with a string name, no name twice."""
    runtimes = document.get("runtimes", [])
    if not isinstance(runtimes, list) or not all(
        isinstance(r, dict) and isinstance(r.get("name"), str) for r in runtimes
    ):
        raise PublishError(
            f"{where}: 'runtimes' is not a list of entries with a name", hint=REPAIR_HINT
        )
    seen: set[str] = set()
    for runtime in runtimes:
        if runtime["name"] in seen:
            raise PublishError(
                f"{where}: {runtime['name'][:120]!r} is listed twice", hint=REPAIR_HINT
            )
        seen.add(runtime["name"])
    return runtimes


def runtime_entries(where: str, body: bytes) -> list[dict[str, Any]]:
    """manifest.json's runtimes, every one a valid entry, or a PublishError naming the first
    damaged one."""
    return valid_runtimes(where, parse_document(where, body))


def valid_runtimes(where: str, document: dict[str, Any]) -> list[dict[str, Any]]:
    """runtime_entries of a document already parsed."""
    runtimes = named_runtimes(where, document)
    for index, runtime in enumerate(runtimes):
        if damage := manifest_entry_damage(runtime):
            raise PublishError(
                f"{where}: runtimes[{index}] ({runtime['name'][:120]!r}): {damage}",
                hint=REPAIR_HINT,
            )
    return runtimes


def uv_entries(where: str, body: bytes) -> dict[str, Any]:
    """uv's download-metadata.json, every entry valid, or a PublishError naming the first
    damaged one."""
    return valid_uv_entries(where, parse_document(where, body))


def valid_uv_entries(where: str, document: dict[str, Any]) -> dict[str, Any]:
    """uv_entries of a document already parsed."""
    for key, entry in document.items():
        if damage := uv_entry_damage(key, entry):
            raise PublishError(f"{where}: entry {key[:120]!r}: {damage}", hint=REPAIR_HINT)
    return document
