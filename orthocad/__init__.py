"""orthocad: from a 3D foot scan to a printable, corrective insole.

The pipeline, one module per stage::

    scan -> frame -> surface -> measure -> prescribe -> insole -> export

Stage modules are imported on first use, so ``import orthocad`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names, resolved lazily: name -> module that defines it.
_LAZY = {
    "read_scan": "orthocad.pipeline",
    "load_feet": "orthocad.pipeline",
    "build_insole": "orthocad.insole",
    "Scan": "orthocad.scan",
    "Foot": "orthocad.frame",
    "Side": "orthocad.enums",
    "ScanKind": "orthocad.enums",
    "Units": "orthocad.enums",
    "OrthocadError": "orthocad.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orthocad' has no attribute {name!r}")
