"""Which checks a runtime must pass, not merely not fail.

recipe/verify-runtime.sh may report a check as skipped (`CHECK name skip reason`) when it
cannot run here: no CPU beside the first to show threads running in parallel, no pip wheel to
build a venv with, a CMake or meson too old for the stack. A skip proves nothing, so the
checks below are declared per variant and profile: each must be reported, and every report of
it must be ok. A required check that was skipped fails the verification unless the caller
allowed that skip by name (`--allow-skip NAME`); the record says which skips were allowed.
Checks not listed here may skip (the stack's tools decide); they are recorded as skips.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.matrix import Profile, VariantName

# Every runtime: it unpacks, runs, is the variant it claims, names only its own tree, and an
# extension module and an embedding program build against it.
CORE: tuple[str, ...] = (
    "extract",
    "exec:python3",
    "abi:tag",
    "gil:state",
    "sysconfig:relocated",
    "recursion:thread",
    "cext:import",
    "embed:run",
)
# What a variant promises beyond the core: a free-threaded runtime runs threads in parallel.
BY_VARIANT: dict[VariantName, tuple[str, ...]] = {
    VariantName.DEFAULT: (),
    VariantName.FREETHREADED: ("threads:parallel",),
}
# A profile that ships pip (installed, or the wheel `python -m venv` installs from) promises
# that a venv with pip works.
PIP = "venv:pip"

# A runtime built for an x86-64 level promises it was checked on a CPU that has the level
# (verify/cpulevel.py); allowing its skip allows the container checks it stood for.
CPU_LEVEL = "cpu:level"

# Every name that can be required: what --allow-skip accepts.
ALL_REQUIRED: frozenset[str] = frozenset(
    {*CORE, PIP, CPU_LEVEL, *(name for names in BY_VARIANT.values() for name in names)}
)


def ships_pip(profile: Profile) -> bool:
    """The profile installs pip or keeps the wheel `python -m venv` installs it from."""
    return profile.ensurepip or profile.footprint.ensurepip_wheels


def required_checks(variant: VariantName, profile: Profile) -> tuple[str, ...]:
    """The checks a runtime of this variant, built with this profile, must pass."""
    names = [*CORE, *BY_VARIANT[variant]]
    if ships_pip(profile):
        names.append(PIP)
    return tuple(names)


def required_checks_of(record: dict[str, Any]) -> tuple[str, ...]:
    """required_checks for a built runtime, from its metadata record: its variant, and the
    profile settings it was built with (the profile in its fingerprint inputs, so a later
    edit of matrix.yaml does not change what this runtime promised). A record without them
    (written by hand, or older than fingerprints) is held to a profile that ships pip."""
    variant = VariantName(record.get("variant", VariantName.DEFAULT.value))
    inputs = record.get("fingerprint_inputs")
    settings = inputs.get("profile") if isinstance(inputs, dict) else None
    profile = Profile(pgo=False, lto=False)
    if isinstance(settings, dict):
        try:
            profile = Profile.model_validate(
                {k: v for k, v in settings.items() if k != "name"}, strict=False
            )
        except ValidationError:
            profile = Profile(pgo=False, lto=False)
    level = (CPU_LEVEL,) if record.get("cpu_level") is not None else ()
    return (*required_checks(variant, profile), *level)


def check_allowed_skips(names: Iterable[str]) -> tuple[str, ...]:
    """The names --allow-skip was given, sorted, each one a check that can be required;
    ConfigError (exit 2) for any other, so a typo never allows nothing silently."""
    allowed = tuple(sorted(set(names)))
    unknown = [name for name in allowed if name not in ALL_REQUIRED]
    if unknown:
        raise ConfigError(
            f"--allow-skip {unknown[0][:60]!r} is not a check a runtime is required to pass",
            hint=f"choose from: {', '.join(sorted(ALL_REQUIRED))}",
        )
    return allowed
