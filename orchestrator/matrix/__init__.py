"""matrix.yaml: its schema (schema.py), the YAML loader with line numbers (loader.py), and
its expansion into cells (cells.py). The names below are the package's public face."""

from orchestrator.matrix.cells import Cell, Matrix
from orchestrator.matrix.loader import load_matrix
from orchestrator.matrix.schema import (
    Arch,
    BuildFlags,
    ConditionalItem,
    CpuLevel,
    CpuLevelSettings,
    Exclude,
    Footprint,
    MatrixModel,
    PackageEntry,
    Profile,
    PublishSettings,
    PythonSource,
    SourceSettings,
    Stack,
    VariantName,
    VariantSettings,
)

__all__ = [
    "Arch",
    "BuildFlags",
    "Cell",
    "ConditionalItem",
    "CpuLevel",
    "CpuLevelSettings",
    "Exclude",
    "Footprint",
    "Matrix",
    "MatrixModel",
    "PackageEntry",
    "Profile",
    "PublishSettings",
    "PythonSource",
    "SourceSettings",
    "Stack",
    "VariantName",
    "VariantSettings",
    "load_matrix",
]
