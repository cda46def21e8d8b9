"""Fail (exit 1) naming every expected module that does not import in this interpreter.

Runs inside the builder container with the freshly installed python. CPython's build only
warns when an optional module's headers are missing; this turns that into a failed cell.
"""

import importlib
import sys
import sysconfig


def main(modules: list[str]) -> int:
    missing: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure means the runtime lacks the module
            missing.append(f"{name} ({type(exc).__name__}: {exc})")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        missing.append("libpython (Py_ENABLE_SHARED is not 1)")
    if missing:
        print("MISSING MODULES: " + "; ".join(missing), file=sys.stderr)
        return 1
    print(f"all {len(modules)} expected modules import")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
