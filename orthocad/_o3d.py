"""Import open3d lazily, first making libusb loadable without root.

open3d's wheels link against ``libusb-1.0.so.0``, which a bare Debian lacks.
The PyPI package ``libusb-package`` ships that library; loading it with
RTLD_GLOBAL before the first ``import open3d`` satisfies the dependency, so a
user without root (no ``apt-get install libusb-1.0-0``) can still run orthocad.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from types import ModuleType


@functools.cache
def open3d() -> ModuleType:
    """Return the open3d module, importing it on first use."""
    if ctypes.util.find_library("usb-1.0") is None:
        _preload_libusb()
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


def _preload_libusb() -> None:
    import libusb_package

    folder = os.path.dirname(libusb_package.__file__)
    for name in sorted(os.listdir(folder)):
        if name.startswith("libusb-1.0") and ".so" in name:
            ctypes.CDLL(os.path.join(folder, name), mode=ctypes.RTLD_GLOBAL)
            return
    raise ImportError("libusb-package ships no libusb-1.0.so; install libusb-1.0-0")
