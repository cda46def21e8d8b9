"""Where the farm writes things on the host (all under one output directory, default ./out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Layout:
    out_dir: Path

    @property
    def artifacts(self) -> Path:
        """Finished archives with their .sha256 and .json."""
        return self.out_dir / "artifacts"

    @property
    def logs(self) -> Path:
        return self.out_dir / "logs"

    def cell_log(self, cell_id: str) -> Path:
        return self.logs / f"{cell_id}.log"

    def image_log(self, tag: str) -> Path:
        """Build log of image `tag` (repository:name), named after the part after the colon."""
        return self.logs / "images" / f"{tag.split(':', 1)[-1]}.log"

    def work(self, cell_id: str) -> Path:
        """Scratch space of one cell: install prefix and spec files; removed after success."""
        return self.out_dir / "work" / cell_id
