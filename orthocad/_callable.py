"""Stage modules that can be called like their stage function.

The public API is ``orthocad.measure(scan, ...)`` and
``orthocad.prescribe(measurements, ...)``, while ``orthocad.measure`` and
``orthocad.prescribe`` are also the stage modules (``from orthocad.measure
import Measurements``). A package attribute cannot be both a submodule and a
function, so the module itself is made callable: calling it calls the
function it names.
"""

from __future__ import annotations

import sys
import types


class _StageModule(types.ModuleType):
    __stage_function__: str

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__stage_function__)(*args, **kwargs)


def make_callable(module_name: str, function_name: str) -> None:
    """Make the module ``module_name`` callable as its function ``function_name``."""
    module = sys.modules[module_name]
    module.__stage_function__ = function_name
    module.__class__ = _StageModule
