"""Feeds merged, minors classified, updates planned, matrix.yaml edited: pure logic, no I/O
beyond tmp_path."""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
import hashlib
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, FeedError
from orchestrator.matrix import PythonSource, load_matrix
from orchestrator.matrix.editor import NewPin, edited_text, update_pins
from orchestrator.sources.feeds import FeedUnavailable, Release
from orchestrator.sources.versions import (
    FeedReport,
    Status,
    merge,
    minor_rows,
    pin_conflicts,
    plan_update,
    read_feeds,
)

REPO = Path(__file__).resolve().parents[2]
TODAY = dt.date(2026, 11, 24)


def _release(version: str, sha: str = "", feed: str = "python.org", ext: str = "tar.xz") -> Release:
    return Release(
        version=version,
        filename=f"Python-{version}.{ext}",
        sha256=sha or hashlib.sha256(f"{version}.{ext}".encode()).hexdigest(),
        feed=feed,
        origin=f"{feed} fixture",
    )


def _pin(version: str, sha: str = "0" * 64) -> PythonSource:
    return PythonSource(version=version, sha256=sha)


class _Feed:
    def __init__(self, name: str, releases: list[Release] | None, reason: str = "") -> None:
        self._name, self._releases, self._reason = name, releases, reason

    @property
    def name(self) -> str:
        return self._name

    def describe(self) -> str:
        return f"fixture {self._name}"

    def releases(self) -> list[Release]:
        if self._releases is None:
            raise FeedUnavailable(self._name, self._reason)
        return self._releases


def test_unreachable_feeds_are_skipped_but_not_all_of_them() -> None:
    lines: list[str] = []
    reports = read_feeds(
        [_Feed("python.org", None, "host not found"), _Feed("debian-sid", [_release("3.13.18")])],
        lines.append,
    )
    assert reports[0].unavailable == "host not found" and len(reports[1].releases) == 1
    assert any("python.org: unavailable (host not found)" in line for line in lines)
    with pytest.raises(FeedError, match="no release feed could be read"):
        read_feeds([_Feed("python.org", None, "host not found")], lines.append)


def test_feeds_that_disagree_on_a_hash_stop_everything() -> None:
    one = FeedReport(name="python.org", source="x", releases=(_release("3.13.18", "a" * 64),))
    two = FeedReport(
        name="debian-sid", source="y", releases=(_release("3.13.18", "b" * 64, "debian-sid"),)
    )
    with pytest.raises(FeedError, match=r"python.org says a{64}.*debian-sid says b{64}"):
        merge([one, two])
    # The same version as another file (.tgz vs .tar.xz) is not a disagreement.
    three = FeedReport(
        name="debian-bookworm",
        source="z",
        releases=(_release("3.13.18", "c" * 64, "debian-bookworm", "tgz"),),
    )
    index = merge([one, three])
    assert index.best("3.13.18").filename == "Python-3.13.18.tar.xz"


def test_statuses() -> None:
    releases = [
        _release(v)
        for v in ("3.9.25", "3.12.12", "3.13.15", "3.13.18", "3.14.10", "3.15.2", "3.16.0a2")
    ]
    index = merge([FeedReport(name="python.org", source="x", releases=tuple(releases))])
    pythons = [_pin("3.9.20"), _pin("3.11.2"), _pin("3.13.5"), _pin("3.13.18"), _pin("3.14.0")]
    rows = {
        r.minor: r
        for r in minor_rows(
            pythons,
            index,
            end_of_life={"3.9": dt.date(2025, 10, 31), "3.16": dt.date(2031, 10, 1)},
            today=TODAY,
        )
    }
    assert {m: r.status for m, r in rows.items()} == {
        "3.9": Status.END_OF_LIFE,
        "3.11": Status.UNKNOWN,
        "3.12": Status.NEW_MINOR,
        "3.13": Status.CURRENT,
        "3.14": Status.STALE,
        "3.15": Status.NEW_MINOR,
        "3.16": Status.PRERELEASE,
    }
    assert rows["3.13"].pinned == ("3.13.5", "3.13.18") and rows["3.14"].newest == "3.14.10"


def test_update_plan_adds_newest_patches_and_never_changes_a_pin() -> None:
    releases = [_release(v) for v in ("3.13.18", "3.14.9", "3.14.10", "3.15.2")]
    index = merge([FeedReport(name="python.org", source="x", releases=tuple(releases))])
    pythons = [_pin("3.13.5"), _pin("3.13.18"), _pin("3.14.0")]
    rows = minor_rows(pythons, index, end_of_life={}, today=TODAY)
    plan = plan_update(pythons, index, rows)
    assert [r.version for r in plan.add] == ["3.14.10"] and plan.drop == ()
    plan = plan_update(pythons, index, rows, minors=["3.15", "3.13"], drop_old=True)
    assert [r.version for r in plan.add] == ["3.15.2"]
    assert plan.drop == ("3.13.5",)
    with pytest.raises(ConfigError, match=r"no release feed that answered lists CPython 3\.17"):
        plan_update(pythons, index, rows, minors=["3.17"])


def test_a_pin_that_differs_from_a_feed_is_reported() -> None:
    index = merge(
        [FeedReport(name="debian-sid", source="x", releases=(_release("3.13.5", "a" * 64),))]
    )
    assert pin_conflicts([_pin("3.13.5", "a" * 64)], index) == []
    (problem,) = pin_conflicts([_pin("3.13.5", "b" * 64)], index)
    assert "publishes " + "a" * 64 in problem


# --- editing matrix.yaml ---------------------------------------------------------------------


def _added_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.splitlines(True), after.splitlines(True)))
    return (
        [line[2:] for line in diff if line.startswith("+ ")],
        [line[2:] for line in diff if line.startswith("- ")],
    )


def test_edit_keeps_everything_else_byte_for_byte() -> None:
    text = (REPO / "matrix.yaml").read_text()
    assert edited_text(text, add=[], drop=[]) == text
    pin = NewPin(
        version="3.13.99",
        sha256="ab" * 32,
        filename=None,
        comment="3.13.99 from release feed debian-sid: python3.13 3.13.99-1 in http://x",
    )
    tgz = NewPin(version="3.99.1", sha256="cd" * 32, filename="Python-3.99.1.tgz", comment="c")
    after = edited_text(text, add=[pin, tgz], drop=[])
    added, removed = _added_lines(text, after)
    assert removed == []
    assert added == [
        "  # 3.13.99 from release feed debian-sid: python3.13 3.13.99-1 in http://x\n",
        '  - version: "3.13.99"\n',
        f"    sha256: {'ab' * 32}\n",
        "  # c\n",
        '  - version: "3.99.1"\n',
        "    filename: Python-3.99.1.tgz\n",
        f"    sha256: {'cd' * 32}\n",
    ]
    # Versions stay in ascending order: 3.13.99 after the other 3.13 pins, 3.99.1 last.
    lines = after.splitlines()
    assert lines.index('  - version: "3.13.99"') > lines.index('  - version: "3.13.5"')
    assert "&ubuntu_build" in after and "*ubuntu_build" in after


def test_update_pins_writes_a_valid_matrix_or_nothing(tmp_path: Path) -> None:
    matrix = tmp_path / "matrix.yaml"
    shutil.copy(REPO / "matrix.yaml", matrix)
    before = matrix.read_text()
    # Dropping every version an exclude names would make the matrix invalid: refused.
    model = load_matrix(matrix).model
    versions = [p.version for p in model.pythons]
    excluded = fnmatch.filter(versions, model.excludes[0].python)
    with pytest.raises(ConfigError, match="left unchanged"):
        update_pins(matrix, add=[], drop=excluded)
    assert matrix.read_text() == before
    with pytest.raises(ConfigError, match="already pins"):
        update_pins(
            matrix,
            add=[NewPin(version=versions[0], sha256="0" * 64, filename=None, comment="x")],
            drop=[],
        )
    assert matrix.read_text() == before
    update_pins(
        matrix,
        add=[NewPin(version="3.13.99", sha256="ef" * 32, filename=None, comment="from a feed")],
        drop=[],
    )
    reloaded = load_matrix(matrix)
    assert any(p.version == "3.13.99" and p.sha256 == "ef" * 32 for p in reloaded.model.pythons)
    assert any(c.version == "3.13.99" for c in reloaded.cells())


SMALL = """\
top: 1
pythons:
  # about the first
  - version: "3.11.2"
    sha256: aa
  # about the second
  - version: "3.13.5"
    sha256: bb

after: 2
"""


def _pin_of(version: str) -> NewPin:
    return NewPin(version=version, sha256="cc", filename=None, comment=f"from a feed: {version}")


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        # Appended: the blank line after the list stays after the list.
        (["3.14.10"], [], SMALL.replace(
            '    sha256: bb\n', '    sha256: bb\n  # from a feed: 3.14.10\n  - version: "3.14.10"\n'
            "    sha256: cc\n")),
        # In the middle: above the item it precedes, whose own comment stays with it.
        (["3.12.1"], [], SMALL.replace(
            "  # about the second\n", '  # from a feed: 3.12.1\n  - version: "3.12.1"\n'
            "    sha256: cc\n  # about the second\n")),
        # Dropping the last item takes its comment, keeps the blank line.
        ([], ["3.13.5"], SMALL.replace(
            '  # about the second\n  - version: "3.13.5"\n    sha256: bb\n', "")),
        # Dropping one and adding after it, in one edit and in two.
        (["3.14.10"], ["3.13.5"], SMALL.replace(
            '  # about the second\n  - version: "3.13.5"\n    sha256: bb\n',
            '  # from a feed: 3.14.10\n  - version: "3.14.10"\n    sha256: cc\n')),
        # Dropping the first keeps the comment above the second. (A comment right under
        # `pythons:` is the list's: ruamel cannot tell it from the first item's.)
        ([], ["3.11.2"], SMALL.replace(
            '  - version: "3.11.2"\n    sha256: aa\n', "")),
    ],
)  # fmt: skip
def test_edits_move_comments_with_their_items(
    add: list[str], drop: list[str], expected: str
) -> None:
    assert edited_text(SMALL, add=[_pin_of(v) for v in add], drop=drop) == expected


def test_sequential_edits_equal_one_edit() -> None:
    once = edited_text(SMALL, add=[_pin_of("3.14.10")], drop=["3.13.5"])
    twice = edited_text(
        edited_text(SMALL, add=[_pin_of("3.14.10")], drop=[]), add=[], drop=["3.13.5"]
    )
    assert once == twice
