"""The feeds matrix.yaml configures (`sources.release_feeds`), built in its order."""

from __future__ import annotations

from pathlib import Path

from orchestrator.matrix.schema import PythonOrgFeedSettings, SourceSettings
from orchestrator.sources.feeds import ReleaseFeed
from orchestrator.sources.feeds.debian import DebianSourcesFeed
from orchestrator.sources.feeds.python_org import PythonOrgFeed


def configured_feeds(settings: SourceSettings, *, root: Path) -> list[ReleaseFeed]:
    feeds: list[ReleaseFeed] = []
    for feed in settings.release_feeds:
        if isinstance(feed, PythonOrgFeedSettings):
            feeds.append(PythonOrgFeed(feed))
        else:
            feeds.append(DebianSourcesFeed(feed, root=root))
    return feeds
