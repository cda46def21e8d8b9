"""The `python.org` feed: upstream's release API, the JSON behind python.org's downloads pages.

Django REST Framework views under the API base (default https://www.python.org/api/v2/
downloads/), each answering a plain JSON array (python/pythondotorg: pydotorg/urls_api.py,
apps/downloads/serializers.py):

- `release/?is_published=true&version=3`: releases; `name` "Python 3.13.5", `version` the
  integer 3 for Python 3, `pre_release`, `resource_uri` (an absolute URL);
- `release_file/?os=3`: the files of the "Source release" OS (id 3); `release` is its
  release's resource URI, `url`, `sha256_sum`, `filesize` (bytes; an IntegerField whose
  default is 0, so 0 means unknown), `gpg_signature_file`, `sigstore_bundle_file`.
  A missing value is "" (the model fields are blank, not null).

A source tarball is a file whose URL ends in Python-VERSION.tar.xz or .tgz. `sha256_sum` was
added in December 2025; files without one (older releases, unless backfilled) are skipped:
the farm pins only hashes it is given, and a Debian feed or a hand pin covers those.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.errors import FeedError
from orchestrator.matrix.schema import PythonOrgFeedSettings
from orchestrator.sources.feeds import TARBALL_NAME, Release, SignatureKind, transfer_failure
from orchestrator.sources.http import TransferFailed, read_url

TIMEOUT = 60.0
LIMIT = 64 * 1024 * 1024  # release_file/?os=3 lists every source file ever: a few MB
# The "Source release" OS (python/release-tools add_to_pydotorg.py: is_source = os_pk == 3).
SOURCE_OS_ID = 3
RELEASE_NAME = re.compile(r"Python (?P<version>\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?)")


class PythonOrgFeed:
    def __init__(self, settings: PythonOrgFeedSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/") + "/"

    @property
    def name(self) -> str:
        return self.settings.name

    def describe(self) -> str:
        return f"{self.base} (release/, release_file/?os={SOURCE_OS_ID})"

    def _get(self, path: str) -> list[dict[str, Any]]:
        url = self.base + path
        try:
            body = read_url(url, timeout=TIMEOUT, limit=LIMIT, accept="application/json")
        except TransferFailed as exc:
            raise transfer_failure(self.name, url, exc) from None
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FeedError(
                f"release feed {self.name}: {url} is not JSON ({exc.__class__.__name__}: {exc})",
                hint="the response was cut short or is not python.org's API; nothing was changed",
            ) from None
        # The API answers a plain list; a paginated answer keeps it under "results".
        if isinstance(document, dict) and isinstance(document.get("results"), list):
            document = document["results"]
        if not isinstance(document, list) or not all(isinstance(i, dict) for i in document):
            raise FeedError(f"release feed {self.name}: {url} is not a list of objects")
        return document

    def releases(self) -> list[Release]:
        published: dict[str, str] = {}  # resource URI -> version
        for item in self._get("release/?is_published=true&version=3"):
            match = RELEASE_NAME.fullmatch(str(item.get("name", "")))
            if match is None or item.get("version") != 3 or item.get("is_published") is False:
                continue  # Python 2, Python Install Manager, and other non-CPython entries
            uri = item.get("resource_uri")
            if not isinstance(uri, str):
                raise FeedError(
                    f"release feed {self.name}: release {item['name']!r} has no resource_uri"
                )
            published[_path_of(uri)] = match["version"]
        releases: list[Release] = []
        for item in self._get(f"release_file/?os={SOURCE_OS_ID}"):
            version = published.get(_path_of(str(item.get("release", ""))))
            url = item.get("url")
            if version is None or not item.get("is_source") or not isinstance(url, str):
                continue
            filename = url.rsplit("/", 1)[-1]
            match = TARBALL_NAME.fullmatch(filename)
            if match is None or match["version"] != version:
                continue  # e.g. the docs archives
            sha256 = item.get("sha256_sum")
            if not sha256:
                continue
            signature_url, kind = _signature(item)
            releases.append(
                Release(
                    version=version,
                    filename=filename,
                    sha256=str(sha256).lower(),
                    size=_filesize(item.get("filesize")),
                    feed=self.name,
                    origin=f"{item.get('resource_uri') or url} of {self.base}",
                    url=url,
                    signature_url=signature_url,
                    signature_kind=kind,
                )
            )
        return releases


def _filesize(value: Any) -> Any:
    """`filesize` when the API knows it: 0 (the model's default) and absence mean unknown.
    Anything else is for Release to judge (it names the feed when it is not a byte count)."""
    return None if value is None or value == 0 else value


def _path_of(uri: str) -> str:
    """The path of a resource URI: the API names releases by absolute URLs whose host may be
    spelled differently from the base the feed was configured with."""
    return re.sub(r"^[a-z]+://[^/]+", "", uri).rstrip("/")


def _signature(item: dict[str, Any]) -> tuple[str | None, SignatureKind | None]:
    bundle = item.get("sigstore_bundle_file")
    if isinstance(bundle, str) and bundle:
        return bundle, "sigstore"
    asc = item.get("gpg_signature_file")
    if isinstance(asc, str) and asc:
        return asc, "openpgp"
    return None, None
