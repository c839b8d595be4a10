"""orthocad: from a 3D foot scan to a printable, corrective insole.

The pipeline, one module per stage::

    scan -> frame -> surface -> measure -> prescribe -> insole -> export

Stage modules are imported on first use, so ``import orthocad`` stays cheap.
``orthocad.measure`` and ``orthocad.prescribe`` are the stage modules and,
called, their stage functions: ``orthocad.measure(path_or_scan, side=...)``,
``orthocad.prescribe(measurements, lld_mm=..., short_side=...)``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Callable stage modules (see orthocad._callable).
_STAGES = ("measure", "prescribe")

# Public names, resolved lazily: name -> module that defines it.
_LAZY = {
    "read_scan": "orthocad.pipeline",
    "load_feet": "orthocad.pipeline",
    "build_insole": "orthocad.insole",
    "write_insole": "orthocad.export",
    "make_insoles": "orthocad.pipeline",
    "Scan": "orthocad.scan",
    "Foot": "orthocad.frame",
    "Side": "orthocad.enums",
    "ScanKind": "orthocad.enums",
    "Units": "orthocad.enums",
    "OrthocadError": "orthocad.errors",
}

__all__ = ["__version__", *_STAGES, *_LAZY]


def __getattr__(name: str):
    if name in _STAGES:
        return importlib.import_module(f"orthocad.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orthocad' has no attribute {name!r}")
