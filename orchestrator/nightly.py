"""Run many cells: skip what is already published with the same fingerprint, build the
rest N at a time, publish each as it completes, and stop cleanly when cancelled.

The fingerprint decision needs no container and no upload: one read of manifest.json and
local facts (rendered Dockerfile, base image id, recipe, profile). Builder images are built
once per (stack, arch) before the cells that need them. One failed cell does not stop the
others unless fail_fast. Infrastructure errors (engine connection, image builds) are
retried with tenacity; compile errors are not.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from orchestrator.cellbuild import Limits, leftover_containers
from orchestrator.engine import EnginePool
from orchestrator.errors import DockerError, FarmError, FileRefused, ImageBuildError, Interrupted
from orchestrator.fsutil import MAX_RECORD_BYTES, read_regular
from orchestrator.images import ImagePlan, ensure_image, plan_image
from orchestrator.layout import Layout
from orchestrator.matrix import Arch, Cell, Matrix
from orchestrator.prepare import BuildOptions, PreparedCell, prepare_cell
from orchestrator.progress import CellOutcome, Reporter, Result
from orchestrator.publish.documents import runtime_entries
from orchestrator.publish.manifests import manifest_key
from orchestrator.publish.publisher import LocalArtifact, Publisher, load_artifact
from orchestrator.publish.record import cell_identity
from orchestrator.publish.store import ObjectStore

if TYPE_CHECKING:
    from tenacity import Retrying

INFRA_ERRORS = (DockerError, ImageBuildError)


@dataclass(frozen=True, kw_only=True)
class Machine:
    cpus: int
    memory_bytes: int

    @staticmethod
    def this() -> Machine:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return Machine(cpus=os.cpu_count() or 1, memory_bytes=int(pages))

    def default_jobs(self) -> int:
        """One cell per 2 cores and per 4 GB (a PGO+LTO compile peaks near 3 GB)."""
        return max(1, min(self.cpus // 2, self.memory_bytes // (4 * 1024**3)))

    def limits_for(self, jobs: int) -> Limits:
        """Split the machine evenly so N parallel `make -j` fit in it."""
        return Limits(
            cpus=max(1.0, self.cpus / jobs),
            memory_bytes=int(self.memory_bytes * 0.9 / jobs),
        )


@dataclass(frozen=True, kw_only=True)
class NightlyOptions:
    build: BuildOptions
    jobs: int
    force: bool = False
    fail_fast: bool = False
    infra_attempts: int = 3


def published_fingerprints(store: ObjectStore, prefix: str) -> dict[str, str]:
    """archive name -> fingerprint of what is published (one GET of manifest.json)."""
    found = store.get(manifest_key(prefix))
    if found is None:
        return {}
    runtimes = runtime_entries(store.describe(manifest_key(prefix)), found[0])
    return {r["name"]: str(r.get("fingerprint") or "") for r in runtimes}


class Nightly:
    def __init__(
        self,
        matrix: Matrix,
        *,
        engines: EnginePool,
        layout: Layout,
        options: NightlyOptions,
        reporter: Reporter,
        publisher: Publisher | None,
    ) -> None:
        self.matrix = matrix
        self.engines = engines
        self.client_for = engines.client
        self.layout = layout
        self.options = options
        self.reporter = reporter
        self.publisher = publisher
        self.cancel = threading.Event()

    def _retrying(self) -> Retrying:
        """A fresh retry policy for one infrastructure call (tenacity is imported here: a
        run that builds nothing never needs it)."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

        reporter = self.reporter
        return Retrying(
            # Never retry once cancelled: removing containers makes builds fail with
            # engine errors that look like infrastructure trouble.
            retry=retry_if_exception(
                lambda exc: isinstance(exc, INFRA_ERRORS) and not self.cancel.is_set()
            ),
            stop=stop_after_attempt(self.options.infra_attempts),
            wait=wait_exponential(multiplier=2, max=30),
            before_sleep=lambda state: reporter.message(
                "infrastructure error, retrying: "
                f"{state.outcome.exception() if state.outcome else ''}"
            ),
            reraise=True,
        )

    # --- planning --------------------------------------------------------------------------

    def prepare(self, cells: list[Cell]) -> tuple[list[PreparedCell], list[CellOutcome]]:
        # One image plan per (stack, arch), failures included: a missing base image is
        # looked up (and maybe pulled) once, not once per Python version.
        plans: dict[tuple[str, Arch], ImagePlan | FarmError] = {}
        prepared: list[PreparedCell] = []
        failed: list[CellOutcome] = []
        for cell in cells:
            key = (cell.stack_name, cell.arch)
            if key not in plans:
                try:
                    plans[key] = plan_image(
                        self.client_for(cell.arch),
                        self.matrix,
                        cell.stack_name,
                        cell.arch,
                        "builder",
                        extra_ca=self.options.build.extra_ca,
                    )
                except FarmError as exc:
                    plans[key] = exc
            plan = plans[key]
            if isinstance(plan, FarmError):
                failed.append(
                    CellOutcome(cell=cell.id, result="failed", seconds=0, reason=str(plan))
                )
                continue
            prepared.append(
                prepare_cell(
                    self.matrix,
                    cell,
                    client=self.client_for(cell.arch),
                    options=self.options.build,
                    builder=plan,
                )
            )
        return prepared, failed

    def split_skipped(
        self, prepared: list[PreparedCell], published: dict[str, str]
    ) -> tuple[list[PreparedCell], list[CellOutcome]]:
        if self.options.force:
            return prepared, []
        todo, skipped = [], []
        for item in prepared:
            if published.get(item.cell.archive_name) == item.fingerprint:
                skipped.append(
                    CellOutcome(
                        cell=item.cell.id,
                        result="skipped",
                        seconds=0,
                        reason="published with the same fingerprint",
                        fingerprint=item.fingerprint,
                    )
                )
            else:
                todo.append(item)
        return todo, skipped

    # --- running ---------------------------------------------------------------------------

    def known_fingerprints(self) -> dict[str, str]:
        """What is already done: the published manifest, or with no publishing, the
        metadata of the local artifacts."""
        if self.publisher is not None:
            return published_fingerprints(self.publisher.store, self.publisher.prefix)
        known = {}
        for record_path in sorted(self.layout.artifacts.glob("python-*.json")):
            try:
                raw = read_regular(record_path, limit=MAX_RECORD_BYTES)
                record = json.loads(raw.decode("utf-8"))
            except (FileRefused, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue  # damaged: not "done", so the cell is built again
            if not isinstance(record, dict) or not isinstance(record.get("name"), str):
                continue
            verification = record.get("verification")
            verified = isinstance(verification, dict) and verification.get("ok") is True
            if verified and (self.layout.artifacts / record.get("name", "")).is_file():
                known[record["name"]] = record.get("fingerprint") or ""
        return known

    def plan(self, cells: list[Cell]) -> tuple[list[PreparedCell], list[CellOutcome]]:
        """(cells to build, outcomes decided without building: skipped or failed early)."""
        prepared, outcomes = self.prepare(cells)
        todo, skipped = self.split_skipped(prepared, self.known_fingerprints())
        return todo, outcomes + skipped

    def run(self, cells: list[Cell]) -> list[CellOutcome]:
        todo, outcomes = self.plan(cells)
        for outcome in outcomes:
            self.reporter.finished(outcome)
        if not todo:
            return outcomes
        # Cells an earlier run built but did not publish need no image and no container.
        reusable = {
            item.cell.id: artifact
            for item in todo
            if (artifact := self.current_local_artifact(item)) is not None
        }
        broken_images = self._ensure_images([i for i in todo if i.cell.id not in reusable])
        runnable = []
        for item in todo:
            key = (item.cell.stack_name, item.cell.arch)
            if key in broken_images and item.cell.id not in reusable:
                outcome = CellOutcome(
                    cell=item.cell.id, result="failed", seconds=0, reason=broken_images[key]
                )
                outcomes.append(outcome)
                self.reporter.finished(outcome)
            else:
                runnable.append(item)
        outcomes += self._run_pool(runnable, reusable)
        return outcomes

    def _ensure_images(self, todo: list[PreparedCell]) -> dict[tuple[str, Arch], str]:
        broken: dict[tuple[str, Arch], str] = {}
        seen: set[tuple[str, Arch]] = set()
        for item in todo:
            key = (item.cell.stack_name, item.cell.arch)
            if key in seen:
                continue
            seen.add(key)
            plan = item.builder
            log = self.layout.image_log(plan.tag)
            self.reporter.message(f"builder image {plan.tag}")
            try:
                self._retrying()(ensure_image, self.client_for(item.cell.arch), plan, log_path=log)
            except FarmError as exc:
                broken[key] = f"builder image: {exc}"
        return broken

    def _run_pool(
        self, todo: list[PreparedCell], reusable: dict[str, LocalArtifact]
    ) -> list[CellOutcome]:
        outcomes: list[CellOutcome] = []
        with ThreadPoolExecutor(max_workers=self.options.jobs, thread_name_prefix="cell") as pool:
            futures: dict[Future[CellOutcome], PreparedCell] = {
                pool.submit(self._one, item, reusable.get(item.cell.id)): item for item in todo
            }
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        outcomes.append(outcome)
                        self.reporter.finished(outcome)
                        if outcome.result == "failed" and self.options.fail_fast:
                            self.cancel.set()
            except KeyboardInterrupt:
                self.cancel.set()
                self._kill_running()
                for future in futures:
                    future.cancel()
                pool.shutdown(wait=True)
                raise Interrupted("interrupted; running containers were removed") from None
        return outcomes

    def _kill_running(self) -> None:
        """Remove every build container this process owns; their workers then fail fast."""
        for arch in Arch:
            try:
                client = self.client_for(arch)
            except FarmError:
                continue
            for container in leftover_containers(client, owner_pid=os.getpid()):
                try:
                    container.remove(force=True)
                except Exception as exc:
                    self.reporter.message(f"could not remove {container.name}: {exc}")

    def current_local_artifact(self, item: PreparedCell) -> LocalArtifact | None:
        """The cell's local artifact when it is complete, verified and built from the same
        inputs (same fingerprint): a run that built it and then failed to publish. Publishing
        it is all that is left; a rebuild would give the same bytes, hours later."""
        cell = item.cell
        record = self.layout.artifacts / f"{cell.archive_stem}.json"
        if self.publisher is None or self.options.force or not record.is_file():
            return None
        try:
            artifact = load_artifact(
                self.layout.artifacts, cell.archive_name, expect=cell_identity(cell)
            )
        except FarmError:
            return None  # incomplete or damaged: built again
        return artifact if artifact.record.get("fingerprint") == item.fingerprint else None

    def _one(self, item: PreparedCell, artifact: LocalArtifact | None = None) -> CellOutcome:
        # The build pipeline (archive, verification, SBOM) only when a cell is built: a run
        # that skips every cell never loads it.
        from orchestrator.build import build_cell

        cell = item.cell
        started = time.monotonic()
        log = str(self.layout.cell_log(cell.id))
        if self.cancel.is_set():
            return CellOutcome(cell=cell.id, result="cancelled", seconds=0, reason="not started")
        self.reporter.phase(cell.id, "start")
        reason = ""
        try:
            if artifact is not None:
                reason = "built by an earlier run from the same inputs; published now"
                self.reporter.phase(cell.id, f"reusing {artifact.archive} (same fingerprint)")
                size, sha256 = int(artifact.record["size"]), artifact.sha256
            else:
                result = self._retrying()(
                    build_cell,
                    self.matrix,
                    cell,
                    client=self.client_for(cell.arch),
                    layout=self.layout,
                    options=self.options.build,
                    progress=lambda line: self.reporter.phase(cell.id, line),
                    prepared=item,
                    docker_host=self.engines.url(cell.arch),
                )
                size, sha256 = result.archive.size, result.archive.sha256
            if self.cancel.is_set():
                raise Interrupted("cancelled before publishing")
            action = None
            if self.publisher is not None:
                self.reporter.phase(cell.id, "publishing")
                # The published archive (if any) was built from other inputs: this run's
                # whole point is to replace it. The replacement is recorded in its .json.
                artifact = artifact or load_artifact(
                    self.layout.artifacts, cell.archive_name, expect=cell_identity(cell)
                )
                outcome = self.publisher.publish(artifact, force=True)
                action = outcome.action
        except FarmError as exc:
            result_kind: Result = "cancelled" if self.cancel.is_set() else "failed"
            return CellOutcome(
                cell=cell.id,
                result=result_kind,
                seconds=time.monotonic() - started,
                reason=str(exc),
                fingerprint=item.fingerprint,
                log=log,
            )
        return CellOutcome(
            cell=cell.id,
            result="built",
            seconds=time.monotonic() - started,
            reason=reason,
            size=size,
            sha256=sha256,
            fingerprint=item.fingerprint,
            published=action,
            log=log,
        )


def with_limits(
    options: BuildOptions, machine: Machine, jobs: int, *, memory_bytes: int | None = None
) -> BuildOptions:
    """The machine split evenly over `jobs` cells; `memory_bytes` (--memory) replaces the
    memory share, for a machine that also does other work."""
    limits = machine.limits_for(jobs)
    if memory_bytes is not None:
        limits = replace(limits, memory_bytes=memory_bytes)
    return replace(options, limits=limits, jobs=max(1, int(limits.cpus or 1)))
