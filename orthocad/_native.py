"""Import the packages with native libraries (open3d, OCP) lazily and loadably.

open3d's and OCP's wheels link against system libraries a bare Debian lacks:
``libusb-1.0.so.0`` (open3d), ``libGL.so.1``, ``libEGL.so.1`` and
``libX11.so.6``. Where the system does not provide them, they are preloaded
(``RTLD_GLOBAL``, so the later ``import`` finds them by soname) from the PyPI
package ``libusb-package`` and from ``<venv>/syslibs``, where
``scripts/runtime-deps.sh`` unpacks Debian's packages for a user without root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path
from types import ModuleType


@functools.cache
def open3d() -> ModuleType:
    """Return the open3d module, importing it on first use."""
    _preload_system_libs()
    if ctypes.util.find_library("usb-1.0") is None:
        _preload_libusb()
    import open3d as o3d

    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


@functools.cache
def cadquery() -> ModuleType:
    """Return the cadquery module, importing it on first use."""
    _preload_system_libs()
    import cadquery as cq

    return cq


def _preload_libusb() -> None:
    import libusb_package

    folder = Path(libusb_package.__file__).parent
    for lib in sorted(folder.glob("libusb-1.0*.so*")):
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        return
    raise ImportError("libusb-package ships no libusb-1.0.so; install libusb-1.0-0")


@functools.cache
def _preload_system_libs() -> None:
    folder = Path(sys.prefix) / "syslibs" / "usr" / "lib" / f"{os.uname().machine}-linux-gnu"
    if not folder.is_dir() or ctypes.util.find_library("GL") is not None:
        return
    pending = sorted(folder.glob("lib*.so.*"))
    # Load in dependency order without knowing it: retry what failed until nothing loads.
    while pending:
        failed = []
        for lib in pending:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if len(failed) == len(pending):
            raise ImportError(
                f"cannot load {failed[0].name} from {folder}; run scripts/runtime-deps.sh"
            )
        pending = failed
