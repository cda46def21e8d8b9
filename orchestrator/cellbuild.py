"""Run one cell's build in one container through the docker SDK.

The container gets the verified source (read-only), the recipe (read-only), the spec files
(read-only) and an empty host directory as its install prefix; no network. Its output is
streamed live to a callback and to the cell's log file. It is removed whatever happens:
success, failure, Ctrl-C or SIGTERM (the CLI turns SIGTERM into KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker.errors
from docker import DockerClient
from docker.models.containers import Container

from orchestrator.buildspec import (
    BUILD_SCRIPT,
    INSTALL_PREFIX,
    RECIPE_DIR,
    BuildSpec,
    installed_recipe_digest,
    recipe_digest,
)
from orchestrator.errors import CellBuildError, DockerError, UnsafeArchiveError
from orchestrator.fsutil import remove_tree
from orchestrator.images import LABEL_PREFIX
from orchestrator.redact import redact
from orchestrator.safetar import extract_untrusted, open_tar_stream
from orchestrator.sandbox import SandboxUser, confinement, hand_over, sandbox_user, take_back
from orchestrator.watchdog import Watchdog

CELL_LABEL = f"{LABEL_PREFIX}.cell"
ROLE_LABEL = f"{LABEL_PREFIX}.role"
# Which process on which host owns a container: lets an operator (or a test) tell its own
# containers from those of another farm run on the same engine.
OWNER_LABEL = f"{LABEL_PREFIX}.owner"
PHASE_MARK = "==> "
_MISSING_RE = re.compile(r"MISSING MODULES: (.*)")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-container resources, so parallel builds share the machine predictably."""

    cpus: float | None = None
    memory_bytes: int | None = None


Transfer = Literal["auto", "bind", "copy"]


def is_local_engine(client: DockerClient) -> bool:
    """True when the engine shares this machine's filesystem (a unix socket)."""
    return str(client.api.base_url).startswith("http+docker://local")


@dataclass(frozen=True, kw_only=True)
class CellRun:
    seconds: float
    last_phase: str


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Split docker's arbitrary log chunks into whole text lines."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def run_build_container(
    client: DockerClient,
    *,
    image_id: str,
    spec: BuildSpec,
    source: Path,
    prefix_dir: Path,
    spec_dir: Path,
    log_path: Path,
    jobs: int,
    source_date_epoch: int,
    limits: Limits | None = None,
    echo: Callable[[str], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    transfer: Transfer = "auto",
    timeout: float | None = None,
    stall_after: float | None = None,
) -> CellRun:
    """Bind mounts when the engine is local; otherwise (e.g. ssh://arm64-builder) the inputs
    are copied into the container and the install tree out of it through the API.

    `timeout` (seconds) kills the container and fails the cell; `stall_after` (seconds without
    output) is reported in the log and through `echo`, once per stall."""
    cell = spec.cell
    limits = limits or Limits()
    copy = transfer == "copy" or (transfer == "auto" and not is_local_engine(client))
    source_in_container = f"/farm/source/{source.name}"
    spec.write_spec_files(spec_dir)
    recipe_dir = _snapshot_recipe(spec_dir.parent / "recipe")
    prefix_dir.mkdir(parents=True, exist_ok=True)
    user = sandbox_user()
    # /tmp holds the build tree: on the host's work dir (bind), else a bounded tmpfs.
    scratch = None if copy else _fresh_dir(spec_dir.parent / "tmp")
    for writable in (prefix_dir, scratch):
        if writable is not None:
            hand_over(writable, user)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    phase = "create container"
    tail: list[str] = []
    missing_modules: str | None = None
    container: Container | None = None
    out_of_memory = False
    watchdog: Watchdog | None = None
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"# cell {cell.id} profile {spec.profile_name} image {image_id}\n")
        try:
            container = client.containers.create(
                image_id,
                command=["bash", f"/farm/recipe/{BUILD_SCRIPT}"],
                name=f"python-farm-{cell.id}-{secrets.token_hex(3)}",
                labels={CELL_LABEL: cell.id, ROLE_LABEL: "build", OWNER_LABEL: owner()},
                environment=spec.container_environment(
                    source_path=source_in_container,
                    jobs=jobs,
                    source_date_epoch=source_date_epoch,
                ),
                volumes=None
                if copy
                else {
                    str(source.resolve()): {"bind": source_in_container, "mode": "ro"},
                    str(recipe_dir.resolve()): {"bind": "/farm/recipe", "mode": "ro"},
                    str(spec_dir.resolve()): {"bind": "/farm/spec", "mode": "ro"},
                    str(prefix_dir.resolve()): {"bind": spec.install_prefix, "mode": "rw"},
                    **({str(scratch.resolve()): {"bind": "/tmp", "mode": "rw"}} if scratch else {}),
                },
                # Memory + swap = the limit: no swap at all. Docker's default (as much swap
                # again) lets a build over its limit thrash on a host with swap for hours
                # instead of stopping with "out of memory".
                **confinement(user, scratch_dir=scratch, memory_bytes=limits.memory_bytes),
                nano_cpus=int(limits.cpus * 1e9) if limits.cpus else None,
                platform=cell.arch.docker_platform,
                detach=True,
            )
            if copy:
                phase = "copy inputs in"
                _copy_in(
                    container,
                    source=source,
                    recipe_dir=recipe_dir,
                    spec_dir=spec_dir,
                    scratch=log_path.parent,
                    user=user,
                    install_prefix=spec.install_prefix,
                )
            phase = "start"

            def note(message: str) -> None:
                log.write(f"# {message}\n")
                log.flush()
                if echo:
                    echo(f"# {message}")

            watchdog = Watchdog(
                kill=functools.partial(_kill_quietly, container),
                timeout=timeout,
                stall_after=stall_after,
                report=note,
            )
            with watchdog:
                container.start()
                for raw in _lines(container.logs(stream=True, follow=True)):
                    watchdog.output()
                    line = redact(raw)
                    log.write(line + "\n")
                    tail = [*tail[-39:], line]
                    if line.startswith(PHASE_MARK):
                        phase = line[len(PHASE_MARK) :].split(" ", 1)[0]
                        if on_phase:
                            on_phase(line[len(PHASE_MARK) :])
                    if match := _MISSING_RE.search(line):
                        missing_modules = match.group(1)
                    if echo:
                        echo(line)
                status = container.wait()
            code = int(status.get("StatusCode", -1))
            out_of_memory = oom_killed(container)
            if copy and code == 0:
                phase = "copy install tree out"
                _copy_out(container, prefix_dir, install_prefix=spec.install_prefix)
        except docker.errors.APIError as exc:
            raise DockerError(
                f"the engine refused cell {cell.id} during {phase}: {exc.explanation or exc}",
                hint=f"log: {log_path}",
            ) from None
        finally:
            if container is not None:
                remove_container(container)
            # Files land on the host owned by whoever runs the farm.
            take_back(prefix_dir, user)
            if scratch is not None:
                take_back(scratch, user)
                remove_tree(scratch, ignore_errors=True)
        seconds = time.monotonic() - started
        log.write(f"# exit {code} after {seconds:.0f} s\n")
    if watchdog is not None and watchdog.timed_out:
        raise CellBuildError(
            f"cell {cell.id} timed out after {(timeout or 0) / 60:.0f} min in phase '{phase}'"
            " (the container was killed and removed)",
            hint=f"raise the profile's timeout_minutes or pass --timeout; log: {log_path}",
        )
    if out_of_memory and code != 0:
        limit = f"{limits.memory_bytes / 1024**3:.1f} GiB" if limits.memory_bytes else "no"
        raise CellBuildError(
            f"cell {cell.id} ran out of memory in phase '{phase}' ({limit} limit;"
            " the kernel killed the build)",
            hint=f"give it more with --memory, or fewer --jobs; log: {log_path}",
        )
    if code != 0:
        if missing_modules:
            raise CellBuildError(
                f"cell {cell.id}: expected modules were not built: {missing_modules}",
                hint=f"add the -dev packages to matrix.yaml (stacks.{cell.stack_name}."
                f"build_packages); log: {log_path}",
            )
        last = " | ".join(t.strip() for t in tail[-4:] if t.strip())
        raise CellBuildError(
            f"cell {cell.id} failed in phase '{phase}' (exit {code}): {last}",
            hint=f"full log: {log_path}",
        )
    return CellRun(seconds=seconds, last_phase=phase)


def _kill_quietly(container: Container) -> None:
    """The watchdog's kill: a container that already stopped is what we wanted anyway."""
    with contextlib.suppress(docker.errors.APIError):
        container.kill()


def _snapshot_recipe(dest: Path) -> Path:
    """A private copy of the recipe for one container. Bash reads a script as it runs, so a
    recipe edited in place during a build (or a checkout switching branches) would otherwise
    be half-read by that build."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(RECIPE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    # The fingerprint was computed from the recipe as it was when this run started.
    if recipe_digest(dest) != installed_recipe_digest():
        raise CellBuildError(
            f"{RECIPE_DIR} changed while this run was going on",
            hint="finish editing the recipe, then run again (the fingerprint must match it)",
        )
    return dest


def _fresh_dir(path: Path) -> Path:
    remove_tree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _copy_in(
    container: Container,
    *,
    source: Path,
    recipe_dir: Path,
    spec_dir: Path,
    scratch: Path,
    user: SandboxUser,
    install_prefix: str = INSTALL_PREFIX,
) -> None:
    """One tar with /farm/{source,recipe,spec}, owned by root and read-only for the build
    user (as the bind mounts are), and an empty prefix the build user owns."""

    def read_only(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
        info.mode &= ~0o222
        return info

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = user.uid, user.gid, "", ""
        return info

    with tempfile.TemporaryFile(dir=scratch) as bundle:
        with tarfile.open(fileobj=bundle, mode="w") as tar:
            tar.add(source, arcname=f"farm/source/{source.name}", filter=read_only)
            tar.add(recipe_dir, arcname="farm/recipe", filter=read_only)
            tar.add(spec_dir, arcname="farm/spec", filter=read_only)
            prefix = tarfile.TarInfo(install_prefix.lstrip("/"))
            prefix.type, prefix.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(owned(prefix))
        bundle.seek(0)
        if not container.put_archive("/", bundle):
            raise DockerError(f"the engine did not accept the inputs for {container.name}")


def _copy_out(
    container: Container, prefix_dir: Path, *, install_prefix: str = INSTALL_PREFIX
) -> None:
    """Stream the install tree out (to a temp file, never whole in memory) and unpack it.
    The container is untrusted: its tar may hold links or devices aimed at the host, so it
    goes through the strict extractor, and nothing of a refused tree is kept."""
    stream, _ = container.get_archive(install_prefix)
    staging = prefix_dir.parent / ".copy-out"
    remove_tree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    name = Path(install_prefix).name
    try:
        with tempfile.TemporaryFile(dir=prefix_dir.parent) as bundle:
            for chunk in stream:
                bundle.write(chunk)
            bundle.seek(0)
            with open_tar_stream(bundle) as tar:
                extract_untrusted(tar, staging, top=name)
        prefix_dir.rmdir()  # created empty above; replaced by the tree that came out
        (staging / name).rename(prefix_dir)
    except UnsafeArchiveError as exc:
        raise CellBuildError(
            f"the build container's install tree was refused: {exc.message}",
            hint="nothing of it was kept; the build recipe or image is not to be trusted",
        ) from None
    except tarfile.TarError as exc:
        raise CellBuildError(f"the build container's install tree is not a tar: {exc}") from None
    finally:
        remove_tree(staging, ignore_errors=True)


def oom_killed(container: Container) -> bool:
    """Whether the kernel's OOM killer ended `container`: it leaves exit 137 like any SIGKILL;
    only the engine knows. Raises docker.errors.APIError like the other engine calls."""
    container.reload()
    return bool(container.attrs.get("State", {}).get("OOMKilled"))


def remove_container(container: Container) -> None:
    """Force-remove; a container already gone (or going) is fine."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise


def owner(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid if pid is not None else os.getpid()}"


def leftover_containers(
    client: DockerClient, cell_id: str | None = None, *, owner_pid: int | None = None
) -> list[Container]:
    """Build containers of the farm still known to the engine (for tests and clean-up)."""
    labels = [f"{CELL_LABEL}={cell_id}" if cell_id else CELL_LABEL]
    if owner_pid is not None:
        labels.append(f"{OWNER_LABEL}={owner(owner_pid)}")
    return list(client.containers.list(all=True, filters={"label": labels}))
