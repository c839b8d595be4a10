"""Scan ingest: read a foot scan from any supported file, fix its units, clean it.

::

    file --read--> Scan --clean--> Scan --split_feet--> [Scan] or [Scan, Scan]

``read`` and ``from_points`` give a :class:`Scan` in millimetres; ``clean``
drops what is not foot (non-finite points, outliers, the floor);
``split_feet`` separates the two feet of a two-foot scan and drops debris.
All are pure: inputs are never changed, and the arrays of the Scans they
return are read-only.

Formats
-------
One registry keyed by the lower-case suffix. ``READERS[suffix](data, name)``
takes the file's bytes and returns a :class:`RawScan` (arrays in the file's
own units); ``WRITERS[suffix](raw, binary=...)`` returns the file's bytes.
``@reader(".ext")`` / ``@writer(".ext")`` register more. Parsing is our own
vectorised numpy so that a corrupt header is refused by comparing what it
promises with the file's size *before* anything big is allocated.

=========  ===============================================  ===============================
suffix     read                                             write
=========  ===============================================  ===============================
.ply       ascii, binary LE and BE; x y z, optional         binary LE (default) or ascii;
           nx ny nz, faces (polygons fanned into            doubles; faces, normals
           triangles); other properties/elements skipped
.pcd       ascii, binary, binary_compressed (through        binary (default) or ascii;
           open3d); x y z, optional normal_x/y/z            doubles; no faces
.xyz .txt  whitespace or comma separated, optional header   space separated, no header;
.csv       line (names x y z nx ny nz are honoured); 3      .csv: comma separated with a
           columns, or >= 6 whose 4th-6th are unit          header line; no faces
           vectors (then read as normals, else ignored)
.obj       v, vn, f (v, v/t, v//n, v/t/n, negative          v, vn, f (v//n when normals)
           indices; polygons fanned); other lines ignored
.stl       ascii and binary; identical corners merged       binary (default) or ascii;
           into shared vertices; facet normals dropped      faces required
.npy       N x 3, or N x 6 (normals in columns 4-6)         N x 3 / N x 6 float64; no faces
.npz       ``points`` or ``vertices``; optional ``faces``,  points, faces, normals
           ``normals``
=========  ===============================================  ===============================

Text writers use 9 significant digits (1e-6 mm at 300 mm), binary writers
doubles (STL: its float32). Formats without faces drop them on writing.

Units
-----
The file's units are decided from the size of the *foot*, not of the whole
cloud (a floor patch is larger): the floor is found and removed, the largest
connected part kept, and its longest extent (horizontal when a floor was
found) measured. Every length scale in that search is a multiple of the
cloud's own point spacing, so the foot is found the same way whatever the
units. An adult foot is 150-400 mm long (:data:`FOOT_LENGTH_BAND_MM`); if
exactly one of mm, cm, m, in puts it in that band, that unit is used and
``units_detected`` is True; otherwise :class:`UnitsError` asks for
``--units``. Explicit units that make the foot no foot raise
:class:`NotAFootError`.

Cleaning
--------
``clean`` runs, in this order: drop non-finite points; downsample on a voxel
grid (points and normals averaged per voxel); remove the floor; remove
statistical outliers (after the floor, whose density would skew their
statistics; with those statistics taken without the gross outliers, which
would otherwise widen them enough to keep points a few mm off the surface).

Faces: downsampling makes them meaningless, so they become None; but a mesh
that downsampling would not even halve (a scanner's mesh is usually that
sparse) is not downsampled and keeps its faces, renumbered, minus those that
lost a vertex to a later step. Point clouds are always downsampled.

The floor is the dominant plane, if the rest of the scan lies on one side
of it and it spreads well beyond the foot's silhouette, so a plantar scan's
flat contact area or a foot's flat sole is never taken for one. Its points
outside the silhouette and any points below it are removed, the sole's
contact points inside it kept, and the plane becomes ``Scan.support_plane``
(normal toward the foot).

Two feet (``split_feet``): connected parts on a voxel grid; a foot-long part
that is two feet touching is refused (see :func:`split_feet`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from tokenize import TokenError
from typing import TYPE_CHECKING

import numpy as np

from orthocad.enums import Units
from orthocad.errors import (
    InputError,
    NotAFootError,
    OrthocadError,
    ParameterError,
    ScanReadError,
    UnitsError,
)

if TYPE_CHECKING:
    from scipy.sparse import coo_matrix

__all__ = [
    "FOOT_LENGTH_BAND_MM",
    "MIN_POINTS",
    "READERS",
    "SUPPORTED_SUFFIXES",
    "WRITERS",
    "Plane",
    "RawScan",
    "Scan",
    "clean",
    "from_points",
    "read",
    "reader",
    "split_feet",
    "write",
    "writer",
]

#: Longest horizontal extent of anything accepted as one adult foot.
FOOT_LENGTH_BAND_MM = (150.0, 400.0)
#: Fewer finite points than this cannot describe a foot.
MIN_POINTS = 1000
#: Limits that keep a corrupt or hostile file from exhausting memory.
MAX_FILE_BYTES = 2 * 1024**3
MAX_POINTS = 50_000_000
#: Coordinates beyond this (in any unit) count as non-finite: corrupt values.
_MAX_COORDINATE = 1e12

_UNIT_CANDIDATES = (Units.MM, Units.CM, Units.M, Units.IN)
_FIX_EXPORT = "re-export the scan from the scanner software"
_FIX_UNITS = "pass --units mm|cm|m|in"

# Floor detection (see _detect_floor).
_FLOOR_BAND_MM = 2.0  #: plane inlier band; 4 sigma of a 0.5 mm scanner noise
_FLOOR_ONE_SIDE = 0.95  #: share of the off-plane points that must lie on the foot's side
_FLOOR_BEYOND = 0.5  #: floor area outside the silhouette, as a share of the silhouette's
_SPECK = 0.05  #: silhouette blobs smaller than this share of the largest are stray points
_ON_SURFACE_MM = 1.0  #: a point this close to its neighbours' plane is surface ...
_SPARSE = 4.0  #: ... when its neighbours are at most this much sparser than the median
_ALIKE = 1.5  #: ... and it is at most this much further from them than they are from theirs
_RANSAC_PLANES = 256
_RANSAC_SCORE_POINTS = 4000

# Foot finding: cluster cells are multiples of the point spacing, never below this.
_FOOT_CELL_MIN_MM = 5.0
_SAMPLE_POINTS = 10_000
#: Two feet touching: each piece of the cut spans this share of the part's length.
_TWO_FEET_SPAN = 0.7
#: No one foot's footprint is wider than this share of its length (the widest
#: allowed, 125 mm at 220 mm, is 0.57); two feet pressed together are.
_ONE_FOOT_ASPECT = 0.65
#: A part thinner than this share of its length is flat (plantar): its thin axis is up.
_FLAT = 0.3


@dataclass(frozen=True, eq=False)
class Plane:
    """A plane in millimetres: ``normal · p = offset``; ``normal`` is unit length."""

    normal: np.ndarray  # (3,)
    offset_mm: float
    residual_mm: float = 0.0  #: RMS distance of the fitted points from the plane

    def distance_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """Signed distance of each point from the plane (positive on the normal's side)."""
        return points_mm @ self.normal - self.offset_mm


@dataclass(frozen=True, eq=False)
class Scan:
    """A scan in millimetres, in the scanner's own coordinates."""

    points_mm: np.ndarray  #: (N, 3) float64
    faces: np.ndarray | None = None  #: (M, 3) int64 indices into points_mm, or None
    normals: np.ndarray | None = None  #: (N, 3) unit vectors, or None
    source: Path | None = None
    sha256: str | None = None  #: of the file as read
    units: Units = Units.MM  #: units the file was in
    units_detected: bool = False  #: True when ``units`` was inferred, not given
    support_plane: Plane | None = None  #: floor found (and removed) by :func:`clean`
    dropped: dict[str, int] = field(default_factory=dict)  #: points dropped per cleaning step


@dataclass(frozen=True, eq=False)
class RawScan:
    """What a reader returns and a writer takes: arrays in the file's own units."""

    points: np.ndarray  #: (N, 3) float64, may hold non-finite values
    faces: np.ndarray | None = None  #: (M, 3) int64 triangles
    normals: np.ndarray | None = None  #: (N, 3) float64


Reader = Callable[[bytes, str], RawScan]
Writer = Callable[..., bytes]  #: ``writer(raw, *, binary: bool) -> bytes``

READERS: dict[str, Reader] = {}
WRITERS: dict[str, Writer] = {}


def reader(*suffixes: str) -> Callable[[Reader], Reader]:
    """Register a reader for these suffixes (``".ply"``; matched case-insensitively)."""

    def register(function: Reader) -> Reader:
        for suffix in suffixes:
            READERS[suffix.lower()] = function
        return function

    return register


def writer(*suffixes: str) -> Callable[[Writer], Writer]:
    """Register a writer for these suffixes."""

    def register(function: Writer) -> Writer:
        for suffix in suffixes:
            WRITERS[suffix.lower()] = function
        return function

    return register


# --------------------------------------------------------------------------- public API


def read(path: str | os.PathLike[str], *, units: Units | str = Units.AUTO) -> Scan:
    """Read a scan file into a :class:`Scan` in millimetres.

    ``units`` is the file's unit, or ``Units.AUTO`` to infer it from the
    size of the foot. Points that are not finite are kept (so faces still
    index correctly); :func:`clean` drops them.

    Raises :class:`ScanReadError` (missing, unknown type, empty, corrupt),
    :class:`UnitsError` (units cannot be inferred) or :class:`NotAFootError`
    (too few points, or no foot at the given units).
    """
    path = Path(path)
    units = _units(units, path.name)
    data = _read_bytes(path)
    function = READERS[path.suffix.lower()]
    raw = function(data, path.name)
    return _scan_from_raw(
        raw, units=units, name=path.name, source=path, sha256=hashlib.sha256(data).hexdigest()
    )


def from_points(
    points: np.ndarray,
    *,
    faces: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    units: Units | str = Units.AUTO,
) -> Scan:
    """Make a :class:`Scan` from arrays (copied), with the same checks and units as :func:`read`."""
    units = _units(units, "points")
    raw = _raw(points, faces, normals, name="points")
    return _scan_from_raw(raw, units=units, name="points", source=None, sha256=None)


def write(
    path: str | os.PathLike[str],
    scan_or_points: Scan | np.ndarray,
    *,
    faces: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    binary: bool = True,
) -> Path:
    """Write points (mm), faces and normals to ``path``; the suffix picks the format.

    ``faces`` and ``normals`` default to the Scan's own. The file appears
    atomically (written under a temporary name, then renamed), so a reader
    never sees half a file. ``binary`` is ignored by formats that have one
    encoding only. Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise _error(
            InputError,
            path.name,
            f"cannot write file type '{path.suffix}'",
            f"use one of {', '.join(sorted(WRITERS))}",
        )
    if isinstance(scan_or_points, Scan):
        points = scan_or_points.points_mm
        faces = scan_or_points.faces if faces is None else faces
        normals = scan_or_points.normals if normals is None else normals
    else:
        points = scan_or_points
    try:
        raw = _raw(points, faces, normals, name=path.name)
    except ScanReadError as error:  # the same checks, but this is no reading
        raise InputError(str(error)) from None
    try:
        blob = WRITERS[suffix](raw, binary=binary)
    except InputError as error:  # a format that cannot hold this scan
        raise InputError(f"{path.name}: {error}") from None
    _write_atomic(path, blob)
    return path


def clean(
    scan: Scan,
    *,
    voxel_mm: float | None = 1.0,
    outlier_neighbors: int = 20,
    outlier_std: float = 2.0,
    remove_floor: bool = True,
) -> Scan:
    """Drop what is not foot: non-finite points, excess density, the floor, outliers.

    Steps, in this order, each counted in ``Scan.dropped`` (added to any
    earlier counts):

    - ``non_finite``: NaN or infinite coordinates or normals, or coordinates
      beyond 1e12 (only corruption makes those);
    - ``voxel``: points merged by averaging over a ``voxel_mm`` grid (None or
      0 skips it; so does a mesh it would not halve, which keeps its faces;
      otherwise faces become None);
    - ``floor`` and ``below_floor`` (``remove_floor``): see the module
      docstring; the plane found becomes ``support_plane``;
    - ``outliers``: points whose mean distance to their ``outlier_neighbors``
      nearest exceeds the mean + ``outlier_std`` standard deviations of that
      distance over the points that are not gross outliers (0 skips it).

    Raises :class:`ParameterError` for bad options, :class:`NotAFootError`
    when fewer than :data:`MIN_POINTS` points remain.
    """
    if voxel_mm is not None and not (voxel_mm >= 0 and math.isfinite(voxel_mm)):
        raise ParameterError(f"voxel_mm={voxel_mm!r}; use a size in mm >= 0, or None")
    if outlier_neighbors < 0 or int(outlier_neighbors) != outlier_neighbors:
        raise ParameterError(f"outlier_neighbors={outlier_neighbors!r}; use a whole number >= 0")
    if not outlier_std > 0:
        raise ParameterError(f"outlier_std={outlier_std!r}; use a number > 0")
    name = scan.source.name if scan.source else "scan"
    points, faces, normals = scan.points_mm, scan.faces, scan.normals
    dropped: dict[str, int] = {}

    finite = _finite_rows(points)
    if normals is not None:
        finite &= np.isfinite(normals).all(axis=1)
    points, faces, normals = _subset(points, faces, normals, finite)
    dropped["non_finite"] = int((~finite).sum())
    _require_points(len(points), name, "after dropping non-finite points")

    if voxel_mm:
        before = len(points)
        points, faces, normals = _voxel_downsample(points, faces, normals, voxel_mm)
        dropped["voxel"] = before - len(points)

    support_plane = scan.support_plane
    if remove_floor:
        cell_mm = max(2.0, 2.0 * _spacing_estimate(points))
        floor = _detect_floor(points, normals, band=_FLOOR_BAND_MM, cell=cell_mm)
        dropped["floor"] = dropped["below_floor"] = 0
        if floor is not None:
            points, faces, normals = _subset(points, faces, normals, ~floor.removed)
            dropped["floor"] = int(floor.floor.sum())
            dropped["below_floor"] = int(floor.below.sum())
            support_plane = floor.plane

    if outlier_neighbors and len(points) > outlier_neighbors:
        keep = _statistical_inliers(points, int(outlier_neighbors), float(outlier_std))
        points, faces, normals = _subset(points, faces, normals, keep)
        dropped["outliers"] = int((~keep).sum())

    _require_points(len(points), name, "after cleaning", fix="use a smaller voxel_mm")
    total = dict(scan.dropped)
    for step, count in dropped.items():
        total[step] = total.get(step, 0) + count
    return replace(
        scan,
        points_mm=_frozen(points),
        faces=_frozen(faces),
        normals=_frozen(normals),
        support_plane=support_plane,
        dropped=total,
    )


def split_feet(scan: Scan) -> list[Scan]:
    """Split a (cleaned, floorless) scan into its feet: a list of one or two Scans.

    Parts are the connected components of the points on a voxel grid (cell
    ``max(5 mm, 2.5 x point spacing)``); a part is a foot when its longest
    horizontal extent is foot-sized and it holds at least a fifth of the
    points of the largest part. Smaller parts (debris) are dropped and
    counted in ``dropped["debris"]``. Two feet come in the order of their
    centroids along the scanner axis that separates them most; which one is
    left is for the frame to decide.

    Raises :class:`NotAFootError` when no part is foot-sized, when more than
    two are, or when a part is two feet touching, which cannot be split
    cleanly: its footprint is wider than any one foot's (known with a floor,
    or for a flat, plantar part), or its cell graph splits, through a weak
    link, into two pieces that each run the part's whole length
    (:func:`_two_feet_touching`).
    """
    name = scan.source.name if scan.source else "scan"
    points = scan.points_mm
    finite = _finite_rows(points)
    if finite.sum() < MIN_POINTS:
        raise _error(
            NotAFootError,
            name,
            f"only {int(finite.sum()):,} finite points",
            f"a foot scan needs at least {MIN_POINTS:,}; clean() a full scan first",
        )
    cell = max(_FOOT_CELL_MIN_MM, 2.5 * _spacing_estimate(points[finite]))
    labels = np.full(len(points), -1, np.int64)
    labels[finite] = _voxel_components(points[finite], cell)
    sizes = np.bincount(labels[finite])
    up = scan.support_plane.normal if scan.support_plane is not None else None
    lo, hi = FOOT_LENGTH_BAND_MM
    feet: list[int] = []
    for label in np.argsort(sizes)[::-1]:
        if sizes[label] < 0.2 * sizes.max():
            break
        part = points[labels == label]
        length, width, thin = _extents(part, up)
        if lo <= length <= hi:
            # The footprint's aspect is known with a floor, or for a flat part
            # (a plantar scan), whose thinnest axis is up.
            level = up is not None or thin < _FLAT * length
            if (level and width > _ONE_FOOT_ASPECT * length) or _two_feet_touching(part, cell):
                raise _error(
                    NotAFootError,
                    name,
                    f"one part ({length:.0f} x {width:.0f} mm) looks like two feet "
                    "touching, which cannot be split cleanly",
                    "scan the feet apart, or crop the scan to one foot",
                )
            feet.append(int(label))
    if not feet:
        length = _extents(points[labels == np.argmax(sizes)], up)[0]
        raise _error(
            NotAFootError,
            name,
            f"no foot-sized part: the largest is {length:.0f} mm long, a foot "
            f"{lo:.0f}-{hi:.0f} mm",
            "check the units, clean() the scan to remove the floor, or crop it to the feet",
        )
    if len(feet) > 2:
        raise _error(
            NotAFootError,
            name,
            f"{len(feet)} foot-sized parts",
            "a scan may hold one foot or two; crop the scan",
        )
    if len(feet) == 1 and (labels == feet[0]).all():
        return [scan]
    centroids = np.array([points[labels == label].mean(axis=0) for label in feet])
    axis = int(np.argmax(np.ptp(centroids, axis=0)))
    feet = [feet[i] for i in np.argsort(centroids[:, axis], kind="stable")]
    others = int(np.isin(labels, feet, invert=True).sum())
    result = []
    for label in feet:
        keep = labels == label
        sub_points, sub_faces, sub_normals = _subset(scan.points_mm, scan.faces, scan.normals, keep)
        dropped = dict(scan.dropped)
        dropped["debris"] = dropped.get("debris", 0) + others
        result.append(
            replace(
                scan,
                points_mm=_frozen(sub_points),
                faces=_frozen(sub_faces),
                normals=_frozen(sub_normals),
                dropped=dropped,
            )
        )
    return result


# --------------------------------------------------------------------------- checks and units


def _error(cls: type[OrthocadError], name: str, problem: str, fix: str) -> OrthocadError:
    """The one-line message every error carries: where, what, and what to do."""
    return cls(re.sub(r"\s+", " ", f"{name}: {problem}; {fix}"))


def _bytes_text(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def _mm_text(value: float) -> str:
    """A length for a message: 2.6, 264, 25,990 (no exponents)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _units(units: Units | str, name: str) -> Units:
    try:
        return Units(units)
    except ValueError:
        raise _error(UnitsError, name, f"unknown units {units!r}", _FIX_UNITS) from None


def _read_bytes(path: Path) -> bytes:
    name = path.name or str(path)
    if path.is_dir():
        raise _error(
            ScanReadError, name, "is a directory, not a scan file", "pass the scan file itself"
        )
    if not path.exists():
        raise _error(ScanReadError, name, "file not found", f"check the path ({path})")
    if path.suffix.lower() not in READERS:
        known = ", ".join(sorted(READERS))
        raise _error(
            ScanReadError, name, f"unknown file type '{path.suffix}'", f"use one of {known}"
        )
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _error(
                ScanReadError,
                name,
                f"the file is {_bytes_text(size)}, more than the "
                f"{_bytes_text(MAX_FILE_BYTES)} orthocad reads",
                "downsample the scan in the scanner software",
            )
        data = path.read_bytes()
    except OSError as error:
        raise _error(ScanReadError, name, f"cannot read the file ({error.strerror})",
                     "check its permissions") from None
    if not data.strip():
        raise _error(ScanReadError, name, "the file is empty", _FIX_EXPORT)
    return data


def _raw(
    points: np.ndarray,
    faces: np.ndarray | None,
    normals: np.ndarray | None,
    *,
    name: str,
) -> RawScan:
    """Checked, owned float64/int64 copies of the arrays (shapes, face indices)."""
    points = np.array(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise _error(
            ScanReadError, name, f"points have shape {points.shape}", "give an N x 3 array"
        )
    if len(points) == 0:
        raise _error(ScanReadError, name, "holds no points", _FIX_EXPORT)
    if len(points) > MAX_POINTS:
        raise _error(
            ScanReadError,
            name,
            f"holds {len(points):,} points, more than the {MAX_POINTS:,} orthocad reads",
            "downsample the scan",
        )
    if faces is not None:
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
            raise _error(
                ScanReadError,
                name,
                f"faces have shape {faces.shape} and type {faces.dtype}",
                "give an M x 3 array of vertex indices",
            )
        faces = faces.astype(np.int64)
        if faces.size and (faces.min() < 0 or faces.max() >= len(points)):
            bad = int(faces.max() if faces.max() >= len(points) else faces.min())
            raise _error(
                ScanReadError,
                name,
                f"a face refers to vertex {bad}, but there are {len(points):,} vertices "
                "(numbered from 0)",
                _FIX_EXPORT,
            )
    if normals is not None:
        normals = np.array(normals, dtype=np.float64)
        if normals.shape != points.shape:
            raise _error(
                ScanReadError,
                name,
                f"normals have shape {normals.shape} but points {points.shape}",
                "give one normal per point",
            )
        normals = _unit(normals)
    return RawScan(points, faces, normals)


def _finite_rows(points: np.ndarray) -> np.ndarray:
    """Rows with usable coordinates: finite, and not absurdly far (a corrupt
    1e300 would overflow every distance computed from it)."""
    with np.errstate(invalid="ignore"):
        return (np.abs(points) < _MAX_COORDINATE).all(axis=1)


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (in place); zero rows stay zero ("unknown"),
    rows too long to measure become zero too."""
    with np.errstate(over="ignore", invalid="ignore"):
        length = np.linalg.norm(vectors, axis=1)[:, None]
        ok = (length > 0) & np.isfinite(length)
        vectors = np.divide(vectors, length, out=vectors, where=ok)
    vectors[~ok[:, 0]] = 0.0
    return vectors


def _require_points(count: int, name: str, when: str, *, fix: str = "") -> None:
    if count < MIN_POINTS:
        raise _error(
            NotAFootError,
            name,
            f"only {count:,} points {when}",
            f"a foot scan needs at least {MIN_POINTS:,}; "
            + (fix or "export the scan at a higher resolution"),
        )


def _scan_from_raw(
    raw: RawScan, *, units: Units, name: str, source: Path | None, sha256: str | None
) -> Scan:
    finite = _finite_rows(raw.points)
    n_finite = int(finite.sum())
    if n_finite == 0:
        raise _error(
            ScanReadError, name, "no point has finite coordinates (all NaN, infinite or absurd)",
            _FIX_EXPORT,
        )
    _require_points(n_finite, name, "with finite coordinates")
    found, detected = _resolve_units(raw.points[finite], units, name)
    scale = found.to_mm
    return Scan(
        points_mm=_frozen(raw.points * scale if scale != 1.0 else raw.points),
        faces=_frozen(raw.faces),
        normals=_frozen(raw.normals),
        source=source,
        sha256=sha256,
        units=found,
        units_detected=detected,
    )


def _resolve_units(points: np.ndarray, units: Units, name: str) -> tuple[Units, bool]:
    """The file's units and whether they were inferred; see the module docstring."""
    length = _foot_length(points, name)
    lo, hi = FOOT_LENGTH_BAND_MM
    if units is not Units.AUTO:
        length_mm = length * units.to_mm
        if not lo <= length_mm <= hi:
            raise _error(
                NotAFootError,
                name,
                f"in {units.value} the foot is {_mm_text(length_mm)} mm long, but a foot is "
                f"{lo:.0f}-{hi:.0f} mm",
                f"check the units ({_FIX_UNITS}) and that the file holds a foot",
            )
        return units, False
    fits = [u for u in _UNIT_CANDIDATES if lo <= length * u.to_mm <= hi]
    if len(fits) == 1:
        return fits[0], True
    if not fits:
        raise _error(
            UnitsError,
            name,
            f"cannot tell the units: the foot is {length:.4g} units long, no foot size "
            f"({lo:.0f}-{hi:.0f} mm) in mm, cm, m or in",
            f"{_FIX_UNITS} if the file holds a foot",
        )
    options = " or ".join(f"{u.value} ({length * u.to_mm:.0f} mm)" for u in fits)
    raise _error(
        UnitsError,
        name,
        f"cannot tell the units: the foot is {length:.4g} units long, a foot size in {options}",
        _FIX_UNITS,
    )


def _foot_length(points: np.ndarray, name: str) -> float:
    """Longest extent of the foot in the file's units, found scale-free.

    Every length used (plane band, raster and cluster cells) is a multiple
    of the sample's own point spacing, so the same foot is found whatever
    the units; only then is its size compared with a foot's.
    """
    sample = np.unique(_subsample(points, _SAMPLE_POINTS), axis=0)
    if len(sample) < MIN_POINTS:
        raise _error(
            NotAFootError,
            name,
            f"only {len(sample):,} distinct point{'s' if len(sample) != 1 else ''}",
            f"a foot scan needs at least {MIN_POINTS:,}; {_FIX_EXPORT}",
        )
    spacing = _nn_spacing(sample)
    if not 0 < spacing < math.inf:  # distances under- or overflow: no measurable size
        raise _error(NotAFootError, name, "the points span no measurable size", _FIX_EXPORT)
    floor = _detect_floor(sample, None, band=1.5 * spacing, cell=2.0 * spacing)
    up = None
    if floor is not None:
        sample, up = sample[~floor.removed], floor.plane.normal
    labels = _voxel_components(sample, 2.5 * spacing)
    foot = sample[labels == np.bincount(labels).argmax()]
    return float(_extents(foot, up)[0])


# --------------------------------------------------------------------------- geometry helpers


def _frozen(array: np.ndarray | None) -> np.ndarray | None:
    """Read-only, so a Scan's arrays cannot be changed behind its back."""
    if array is not None:
        array.setflags(write=False)
    return array


def _subsample(points: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` points, drawn reproducibly (seeded) rather than strided,
    because a scanner's point order can alias with any stride."""
    if len(points) <= count:
        return points
    index = np.unique(np.random.default_rng(0).integers(0, len(points), count))
    return points[index]


def _nn_spacing(points: np.ndarray) -> float:
    """Median distance from a point to its nearest (distinct) neighbour."""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(points).query(points, k=2, workers=-1)
    distance = distance[:, 1]
    distance = distance[distance > 0]
    return float(np.median(distance)) if distance.size else 0.0


def _spacing_estimate(points: np.ndarray) -> float:
    """Point spacing of the whole cloud from a sample: on a surface the spacing
    scales with 1/sqrt(density), so the sample's is scaled back."""
    sample = _subsample(points, _SAMPLE_POINTS)
    return _nn_spacing(sample) * math.sqrt(len(sample) / len(points))


def _subset(
    points: np.ndarray, faces: np.ndarray | None, normals: np.ndarray | None, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Keep some points; faces are renumbered and lose those that lost a vertex."""
    if keep.all():
        return points, faces, normals
    if faces is not None:
        number = np.cumsum(keep) - 1
        faces = number[faces[keep[faces].all(axis=1)]]
    return points[keep], faces, None if normals is None else normals[keep]


def _cell_index(values: np.ndarray, cell: float) -> np.ndarray:
    """Integer cell of each value; absurdly far values (a corrupt coordinate of
    1e300) are clamped so that the integers cannot overflow."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.floor(np.clip(values / cell, -(2.0**60), 2.0**60)).astype(np.int64)


def _cell_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per integer cell (N x 3), and the strides of the three axes."""
    keys = keys - keys.min(axis=0) + 1  # room for the -1 neighbour
    dims = keys.max(axis=0) + 2
    if math.prod(int(d) for d in dims) >= 2**62:
        # Far-flung points make the box too large to encode: renumber each axis,
        # keeping neighbouring cells adjacent and every other gap at 2.
        keys = np.stack([_squeeze_axis(keys[:, i]) for i in range(3)], axis=1)
        dims = keys.max(axis=0) + 2
    strides = np.array([dims[1] * dims[2], dims[2], 1], np.int64)
    return keys @ strides, strides


def _squeeze_axis(values: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(values, return_inverse=True)
    step = np.where(np.diff(unique) == 1, 1, 2)
    return np.concatenate(([1], 1 + np.cumsum(step)))[inverse]


def _voxel_graph(points: np.ndarray, cell: float) -> tuple[coo_matrix, np.ndarray]:
    """Occupied cells as a graph (an edge between cells touching in the
    26-neighbourhood, each pair once), and each point's cell."""
    from scipy.sparse import coo_matrix

    codes, strides = _cell_codes(_cell_index(points, cell))
    unique, inverse = np.unique(codes, return_inverse=True)
    offsets = np.array(
        [(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    ) @ strides
    rows, cols = [], []
    for offset in offsets[offsets > 0]:
        target = unique + offset
        where = np.minimum(np.searchsorted(unique, target), len(unique) - 1)
        hit = unique[where] == target
        rows.append(np.flatnonzero(hit))
        cols.append(where[hit])
    row, col = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(row)), (row, col)), shape=(len(unique),) * 2)
    return graph, inverse


def _voxel_components(points: np.ndarray, cell: float) -> np.ndarray:
    """Label of each point's connected part (occupied cells touching)."""
    from scipy.sparse.csgraph import connected_components

    graph, inverse = _voxel_graph(points, cell)
    _, cell_labels = connected_components(graph, directed=False)
    return cell_labels[inverse]


def _two_feet_touching(points: np.ndarray, cell: float) -> bool:
    """Whether a foot-long connected part is two feet side by side.

    A scan is a surface, so two feet that touch are two shells joined only
    where they touch: the graph of occupied cells has a weak link there, and
    its Fiedler vector (the Laplacian's second eigenvector) cuts it. One
    foot has no such link, and the same cut divides it across its length
    into a rear and a front piece. So: two feet when both pieces of the cut
    are substantial and each spans most of the part's length.
    """
    from scipy.sparse import diags
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    graph, inverse = _voxel_graph(points, cell)
    if graph.shape[0] < 20:
        return False
    graph = (graph + graph.T).tocsr()
    laplacian = (diags(np.asarray(graph.sum(axis=1)).ravel()) - graph).tocsc()
    # Shift-invert just below 0 finds the two smallest eigenpairs fast; the
    # shift keeps the factorised matrix positive definite.
    try:
        values, vectors = eigsh(laplacian, k=2, sigma=-1e-3, which="LM")
    except ArpackNoConvergence:
        return False  # undecided: the footprint-width test still applies
    piece = (vectors[:, np.argsort(values)[1]] > 0)[inverse]
    centred = points - points.mean(axis=0)
    along = centred @ np.linalg.eigh(centred.T @ centred)[1][:, -1]
    span = np.ptp(along)
    for side in (piece, ~piece):
        if side.sum() < 0.25 * len(points) or np.ptp(along[side]) < _TWO_FEET_SPAN * span:
            return False
    return True


def _plane_basis(normal: np.ndarray) -> np.ndarray:
    """Two orthonormal vectors spanning the plane normal to ``normal`` (3 x 2)."""
    helper = np.eye(3)[int(np.argmin(np.abs(normal)))]
    u = np.cross(normal, helper)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(normal, u)], axis=1)


def _extents(points: np.ndarray, up: np.ndarray | None) -> np.ndarray:
    """Extents along the principal axes, largest first: with ``up``, the two
    of the footprint (normal to ``up``) and then the height; without, the
    three of the cloud."""
    centred = points - points.mean(axis=0)
    if up is None:
        axes = np.linalg.eigh(centred.T @ centred)[1][:, ::-1]
    else:
        basis = _plane_basis(up)
        flat = centred @ basis
        axes = np.column_stack([basis @ np.linalg.eigh(flat.T @ flat)[1][:, ::-1], up])
    return np.ptp(centred @ axes, axis=0)


# --------------------------------------------------------------------------- cleaning steps


def _voxel_downsample(
    points: np.ndarray, faces: np.ndarray | None, normals: np.ndarray | None, voxel_mm: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Average points (and normals) per voxel; a mesh that would not even halve is
    left as it is, since downsampling costs it its faces."""
    codes, _ = _cell_codes(_cell_index(points, voxel_mm))
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    if faces is not None and len(counts) >= 0.5 * len(points):
        return points, faces, normals  # a mesh that would not even halve: keep its faces

    def mean(values: np.ndarray) -> np.ndarray:
        sums = [np.bincount(inverse, weights=values[:, i], minlength=len(counts)) for i in range(3)]
        return np.stack(sums, axis=1) / counts[:, None]

    return mean(points), None, None if normals is None else _unit(mean(normals))


def _statistical_inliers(points: np.ndarray, neighbors: int, std_ratio: float) -> np.ndarray:
    """Points whose mean distance to their ``neighbors`` nearest is at most the
    mean + ``std_ratio`` standard deviations of that distance, or that lie on
    the surface their neighbours make.

    The mean and deviation are taken over the points that pass a first round
    with the plain statistics: outliers widen the plain deviation so much
    (2.4 mm against 0.2 mm for the surface, with 1 % outliers) that those
    within a few millimetres of the surface would stay. A sparsely sampled
    patch of the foot fails that test as a whole, though (a fixed threshold
    cut 4 % of a good 60k-point scan, in patches of the sole); so a point
    that fails it is still kept when it lies within ``_ON_SURFACE_MM`` of
    the plane fitted to its neighbours, is about as far from them as they are
    from theirs (``_ALIKE``), and its neighbourhood is at most ``_SPARSE``
    times sparser than the scan's median (stray points are further apart: a
    chance few on a plane are no surface).
    """
    from scipy.spatial import cKDTree

    distance, index = cKDTree(points).query(points, k=neighbors + 1, workers=-1)
    mean = distance[:, 1:].mean(axis=1)
    first = mean <= mean.mean() + std_ratio * mean.std()
    keep = mean <= mean[first].mean() + std_ratio * mean[first].std()
    # only a patch up to _SPARSE times sparser than the scan's median can be surface
    suspects = np.flatnonzero(~keep & (mean <= _SPARSE * np.median(mean)))
    if len(suspects):
        around = points[index[suspects, 1:]]
        centred = around - around.mean(axis=1, keepdims=True)
        normal = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))[1][:, :, 0]
        off = np.abs(np.einsum("ni,ni->n", points[suspects] - around.mean(axis=1), normal))
        # ... and as sparse as its neighbours: a stray point beside a surface's edge is in its
        # plane too, but further from them than they are from each other
        alike = mean[suspects] <= _ALIKE * np.median(mean[index[suspects, 1:]], axis=1)
        keep[suspects[(off <= _ON_SURFACE_MM) & alike]] = True
    return keep


@dataclass(frozen=True, eq=False)
class _Floor:
    plane: Plane  #: normal toward the foot
    floor: np.ndarray  #: mask: floor points to remove
    below: np.ndarray  #: mask: points below the floor to remove

    @property
    def removed(self) -> np.ndarray:
        return self.floor | self.below


def _ransac_plane(
    points: np.ndarray, band: float, rng: np.random.Generator
) -> tuple[np.ndarray, float] | None:
    """The plane through three sample points with the most points within ``band``,
    all hypotheses scored at once on a sample."""
    sample = points[rng.integers(0, len(points), min(len(points), _RANSAC_SCORE_POINTS))]
    a, b, c = (sample[rng.integers(0, len(sample), _RANSAC_PLANES)] for _ in range(3))
    normals = np.cross(b - a, c - a)
    length = np.linalg.norm(normals, axis=1)
    valid = length > 1e-12 * max(float(np.ptp(sample)), 1.0) ** 2
    if not valid.any():
        return None
    normals = normals[valid] / length[valid, None]
    offsets = (normals * a[valid]).sum(axis=1)
    score = (np.abs(sample @ normals.T - offsets) <= band).sum(axis=0)
    best = int(np.argmax(score))
    return normals[best], float(offsets[best])


def _detect_floor(
    points: np.ndarray, normals: np.ndarray | None, *, band: float, cell: float
) -> _Floor | None:
    """The floor under the foot, or None.

    The dominant plane (RANSAC, then least squares on its inliers) is a
    floor only if (1) at least 95 % of the points farther than 2 x band
    from it lie on one side (the foot's), and (2) its inliers cover an area
    outside the foot's silhouette at least half the silhouette's: a real
    floor spreads well beyond the foot, while the flat contact area of a
    sole or of a plantar scan lies inside it. Removed: points within
    2 x band of the plane outside the silhouette (floor), all points more
    than 2 x band below it, and, when the normals are oriented (the floor's
    face the foot), inliers under the foot whose normals face up (floor
    under the overhang; the sole's face down and stay).
    """
    from scipy import ndimage

    if len(points) < 100:
        return None
    fit = _ransac_plane(points, band, np.random.default_rng(0))
    if fit is None:
        return None
    normal, offset = fit
    for _ in range(2):  # refit on all inliers: three points only roughly give the plane
        inlier = np.abs(points @ normal - offset) <= band
        if inlier.sum() < 3:
            return None
        centre = points[inlier].mean(axis=0)
        centred = points[inlier] - centre
        normal = np.linalg.eigh(centred.T @ centred)[1][:, 0]
        offset = float(centre @ normal)
    distance = points @ normal - offset
    far = np.abs(distance) > 2 * band
    if not far.any():
        return None  # everything is on the plane: nothing stands on it
    above = float((distance[far] > 0).mean())
    if above < 0.5:
        normal, offset, distance, above = -normal, -offset, -distance, 1.0 - above
    if above < _FLOOR_ONE_SIDE:
        return None
    inlier = np.abs(distance) <= band
    near = np.abs(distance) <= 2 * band
    foot = distance > 2 * band

    # Silhouette of the foot on the plane: a raster over the foot's box (its
    # bulk box enlarged by half, so stray points far off cannot blow it up),
    # padded so that morphology at the border does not eat the foot's tips.
    flat = points @ _plane_basis(normal)
    low_q, high_q = np.percentile(flat[foot], [0.5, 99.5], axis=0)
    margin = 0.5 * (high_q - low_q)
    low = np.maximum(flat[foot].min(axis=0), low_q - margin) - 2 * cell
    high = np.minimum(flat[foot].max(axis=0), high_q + margin) + 2 * cell
    shape = tuple(((high - low) / cell).astype(np.int64) + 1)
    ij = _cell_index(flat - low, cell)
    in_box = (ij >= 0).all(axis=1) & (ij < shape).all(axis=1)
    silhouette = np.zeros(shape, bool)
    silhouette[tuple(ij[foot & in_box].T)] = True
    silhouette = ndimage.binary_fill_holes(ndimage.binary_closing(silhouette))
    # Stray points above the floor (outliers) make specks: keep the big blobs only.
    blobs, _ = ndimage.label(silhouette, structure=np.ones((3, 3)))
    area = np.bincount(blobs.ravel())
    area[0] = 0
    silhouette = (area >= _SPECK * area.max())[blobs]
    in_silhouette = np.zeros(len(points), bool)
    in_silhouette[in_box] = silhouette[tuple(ij[in_box].T)]

    # (2) Floor area beyond the silhouette (dilated: the foot's own lowest
    # ring must not count), in cells; cells of far-off points are clipped.
    dilated = ndimage.binary_dilation(silhouette, iterations=2)
    beside = inlier.copy()
    beside[in_box] &= ~dilated[tuple(ij[in_box].T)]
    cells = np.clip(ij[beside], -(10**6), 10**6)
    n_beyond = len(np.unique(cells[:, 0] * (3 * 10**6) + cells[:, 1]))
    if n_beyond < _FLOOR_BEYOND * silhouette.sum():
        return None

    floor = near & ~in_silhouette
    if normals is not None and floor.any():
        facing = normals @ normal
        if (facing[floor] > 0.5).mean() >= 0.9:
            floor |= inlier & in_silhouette & (facing > 0.5)
    residual = float(np.sqrt(np.mean(distance[inlier] ** 2)))
    return _Floor(
        plane=Plane(normal=normal, offset_mm=offset, residual_mm=residual),
        floor=floor,
        below=distance < -2 * band,
    )


# --------------------------------------------------------------------------- shared parsing helpers

_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_BLANK = np.zeros(256, bool)
_BLANK[[9, 32]] = True


def _within(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each count c, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def _fan(counts: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Triangles fanned from each polygon's first corner (``counts`` corners each,
    concatenated in ``flat``); polygons of fewer than 3 corners (lines) are dropped."""
    counts = np.asarray(counts, np.int64)
    starts = np.cumsum(counts) - counts
    n_triangles = np.maximum(counts - 2, 0)
    first = np.repeat(starts, n_triangles)
    step = _within(n_triangles)
    flat = np.asarray(flat, np.int64)
    return np.stack([flat[first], flat[first + step + 1], flat[first + step + 2]], axis=1)


def _ascii_numbers(body: bytes, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All numbers of a whitespace-separated text, with the number count and the
    index of the first number of each non-empty line."""
    try:
        values = np.fromstring(body.decode("ascii"), sep=" ")
    except (UnicodeDecodeError, ValueError):
        raise _error(
            ScanReadError, name, "the text holds something that is not a number", _FIX_EXPORT
        ) from None
    byte = np.frombuffer(body, np.uint8)
    space = _WHITESPACE[byte]
    start = ~space
    start[1:] &= space[:-1]
    token_line = np.cumsum(byte == 10)[start]
    if len(token_line) != len(values):
        raise _error(
            ScanReadError, name, "the text holds something that is not a number", _FIX_EXPORT
        )
    if not len(values):
        return values, np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = np.flatnonzero(np.diff(token_line, prepend=-1))
    per_line = np.diff(np.append(first, len(values)))
    return values, per_line, first


def _truncated(name: str, what: str, need: str, have: str) -> ScanReadError:
    return _error(
        ScanReadError,
        name,
        f"the header promises {what} ({need}) but the file holds only {have}: "
        "it is truncated or corrupt",
        _FIX_EXPORT,
    )


def _normals_if_unit(columns: np.ndarray) -> np.ndarray | None:
    """Columns 4-6 of a table are normals only if they are unit vectors
    (x y z r g b tables are common too)."""
    length = np.linalg.norm(columns, axis=1)
    length = length[np.isfinite(length)]
    if length.size and (np.abs(length - 1.0) < 0.01).mean() >= 0.99:
        return columns
    return None


def _text_rows(values: np.ndarray, fmt: str, *, prefix: str = "", sep: str = " ") -> bytes:
    """Rows of numbers as text, ``fmt`` for each value."""
    if values.size == 0:
        return b""
    return _format_rows(values, prefix + sep.join([fmt] * values.shape[1]) + "\n")


def _format_rows(values: np.ndarray, row: str) -> bytes:
    """One ``row`` format per row of ``values``, applied by a single ``%`` (in C)."""
    return ((row * len(values)) % tuple(values.ravel().tolist())).encode("ascii")


# --------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": "<", "binary_little_endian": "<", "binary_big_endian": ">"}
_PLY_INDEX_NAMES = ("vertex_indices", "vertex_index")


@dataclass(frozen=True)
class _PlyProperty:
    name: str
    dtype: np.dtype  #: of the value, or of a list's items
    count_dtype: np.dtype | None = None  #: of a list's length prefix; None for a scalar


@dataclass(frozen=True)
class _PlyElement:
    name: str
    count: int
    properties: tuple[_PlyProperty, ...]

    @property
    def lists(self) -> list[int]:
        return [i for i, p in enumerate(self.properties) if p.count_dtype is not None]


def _ply_header(data: bytes, name: str) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise _error(ScanReadError, name, "not a PLY file (it does not start with 'ply')",
                     _FIX_EXPORT)
    end = data.find(b"end_header", 0, 1 << 16)
    if end < 0:
        raise _error(ScanReadError, name, "the PLY header has no end_header line", _FIX_EXPORT)
    newline = data.find(b"\n", end)
    body = len(data) if newline < 0 else newline + 1
    fmt = None
    elements: list[tuple[str, int, list[_PlyProperty]]] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        word = line.split()
        if not word or word[0] in ("comment", "obj_info"):
            continue
        try:
            if word[0] == "format":
                fmt = word[1]
                if fmt not in _PLY_FORMATS:
                    raise ValueError
            elif word[0] == "element":
                count = int(word[2])
                if count < 0:
                    raise ValueError
                elements.append((word[1], count, []))
            elif word[0] == "property" and elements and fmt is not None:
                order = _PLY_FORMATS[fmt]
                if word[1] == "list":
                    if _PLY_TYPES[word[2]][0] not in "iu":
                        raise ValueError  # a list's length must be an integer
                    prop = _PlyProperty(
                        word[4],
                        np.dtype(order + _PLY_TYPES[word[3]]),
                        np.dtype(order + _PLY_TYPES[word[2]]),
                    )
                else:
                    prop = _PlyProperty(word[2], np.dtype(order + _PLY_TYPES[word[1]]))
                elements[-1][2].append(prop)
            else:
                raise ValueError
        except (ValueError, IndexError, KeyError):
            raise _error(
                ScanReadError, name, f"unreadable PLY header line '{line.strip()[:60]}'",
                _FIX_EXPORT,
            ) from None
    if fmt is None:
        raise _error(ScanReadError, name, "the PLY header has no format line", _FIX_EXPORT)
    return fmt, [_PlyElement(n, c, tuple(p)) for n, c, p in elements], body


@reader(".ply")
def _read_ply(data: bytes, name: str) -> RawScan:
    fmt, elements, body = _ply_header(data, name)
    if "vertex" not in [e.name for e in elements]:
        raise _error(ScanReadError, name, "the PLY file has no vertex element", _FIX_EXPORT)
    if fmt == "ascii":
        tables = _ply_ascii(data[body:], elements, name)
    else:
        tables = _ply_binary(data, body, elements, name)
    vertex = tables["vertex"]
    if not isinstance(vertex, dict) or not {"x", "y", "z"} <= vertex.keys():
        raise _error(ScanReadError, name, "the PLY vertices have no x, y, z", _FIX_EXPORT)
    points = np.stack([vertex[k] for k in "xyz"], axis=1)
    normals = None
    if {"nx", "ny", "nz"} <= vertex.keys():
        normals = np.stack([vertex[k] for k in ("nx", "ny", "nz")], axis=1)
    faces = None
    face = tables.get("face")
    if isinstance(face, tuple):
        faces = _fan(*face)
    return _raw(points, faces, normals, name=name)


def _ply_binary(
    data: bytes, pos: int, elements: list[_PlyElement], name: str
) -> dict[str, dict[str, np.ndarray] | tuple[np.ndarray, np.ndarray]]:
    tables: dict[str, dict[str, np.ndarray] | tuple[np.ndarray, np.ndarray]] = {}
    for element in elements:
        if {"vertex", "face"} <= tables.keys():
            break  # later elements are not needed
        if not element.lists:
            dtype = np.dtype([(f"f{i}", p.dtype) for i, p in enumerate(element.properties)])
            need = element.count * dtype.itemsize
            if need > len(data) - pos:
                raise _truncated(name, f"{element.count:,} {element.name} rows",
                                 _bytes_text(need), _bytes_text(len(data) - pos))
            rows = np.frombuffer(data, dtype, element.count, pos)
            pos += need
            tables[element.name] = {
                p.name: rows[f"f{i}"] for i, p in enumerate(element.properties)
            }
        else:
            counts, flat, pos = _ply_binary_lists(data, pos, element, name)
            tables[element.name] = (counts, flat)
    return tables


def _ply_binary_lists(
    data: bytes, pos: int, element: _PlyElement, name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of an element with list properties: the first list's lengths and items."""
    props = element.properties
    minimum = sum((p.count_dtype or p.dtype).itemsize for p in props)
    if element.count * minimum > len(data) - pos:
        raise _truncated(name, f"{element.count:,} {element.name} rows",
                         f"at least {_bytes_text(element.count * minimum)}",
                         _bytes_text(len(data) - pos))
    if len(element.lists) == 1 and element.count:
        # Fast path: every row has the first row's length (all triangles, say).
        j = element.lists[0]
        before = sum(p.dtype.itemsize for p in props[:j])
        after = sum(p.dtype.itemsize for p in props[j + 1:])
        count_dtype, item_dtype = props[j].count_dtype, props[j].dtype
        assert count_dtype is not None
        k = int(np.frombuffer(data, count_dtype, 1, pos + before)[0])
        size = before + count_dtype.itemsize + k * item_dtype.itemsize + after
        if k > 0 and element.count * size <= len(data) - pos:
            dtype = np.dtype({
                "names": ["n", "i"],
                "formats": [count_dtype, (item_dtype, (k,))],
                "offsets": [before, before + count_dtype.itemsize],
                "itemsize": size,
            })
            rows = np.frombuffer(data, dtype, element.count, pos)
            if (rows["n"] == k).all():
                counts = np.full(element.count, k, np.int64)
                return counts, rows["i"].reshape(-1), pos + element.count * size
    return _ply_binary_walk(data, pos, element, name)


def _ply_binary_walk(
    data: bytes, pos: int, element: _PlyElement, name: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of mixed lengths (triangles and quads, say) can only be walked in order;
    rare in scans, so a plain loop over the rows is acceptable here."""
    first = element.lists[0]
    counts = np.zeros(element.count, np.int64)
    chunks = []
    formats = [
        (struct.Struct(p.dtype.str[0] + (p.count_dtype or p.dtype).char), p.dtype)
        for p in element.properties
    ]
    for row in range(element.count):
        for i, (prop, (packer, item)) in enumerate(zip(element.properties, formats, strict=True)):
            if pos + packer.size > len(data):
                raise _truncated(name, f"{element.count:,} {element.name} rows",
                                 "more", _bytes_text(len(data)))
            if prop.count_dtype is None:
                pos += packer.size
                continue
            n = int(packer.unpack_from(data, pos)[0])
            pos += packer.size
            if n < 0 or pos + n * item.itemsize > len(data):
                raise _truncated(name, f"{element.count:,} {element.name} rows",
                                 "more", _bytes_text(len(data)))
            if i == first:
                counts[row] = n
                chunks.append(np.frombuffer(data, item, n, pos))
            pos += n * item.itemsize
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    return counts, flat, pos


def _ply_ascii(
    body: bytes, elements: list[_PlyElement], name: str
) -> dict[str, dict[str, np.ndarray] | tuple[np.ndarray, np.ndarray]]:
    values, per_line, first = _ascii_numbers(body, name)
    tables: dict[str, dict[str, np.ndarray] | tuple[np.ndarray, np.ndarray]] = {}
    line = 0
    for element in elements:
        if {"vertex", "face"} <= tables.keys():
            break
        if line + element.count > len(per_line):
            raise _truncated(name, f"{element.count:,} {element.name} rows",
                             f"{element.count:,} lines", f"{len(per_line) - line:,} lines")
        rows = slice(line, line + element.count)
        line += element.count
        n_values, start = per_line[rows], first[rows]
        width = len(element.properties)
        if not element.lists:
            bad = np.flatnonzero(n_values != width)
            if bad.size:
                raise _error(
                    ScanReadError,
                    name,
                    f"{element.name} row {bad[0] + 1} has {n_values[bad[0]]} numbers, "
                    f"the header declares {width}",
                    _FIX_EXPORT,
                )
            begin = start[0] if element.count else 0
            table = values[begin:begin + element.count * width].reshape(element.count, width)
            tables[element.name] = {p.name: table[:, i] for i, p in enumerate(element.properties)}
        elif len(element.lists) == 1:
            j = element.lists[0]
            lengths = values[start + j]
            bad = np.flatnonzero((lengths < 0) | (lengths != np.floor(lengths))
                                 | (n_values != width + np.maximum(lengths, 0)))
            if bad.size:
                raise _error(
                    ScanReadError,
                    name,
                    f"{element.name} row {bad[0] + 1} does not match its list length",
                    _FIX_EXPORT,
                )
            lengths = lengths.astype(np.int64)
            flat = values[np.repeat(start + j + 1, lengths) + _within(lengths)]
            tables[element.name] = (lengths, flat.astype(np.int64))
        elif element.name in ("vertex", "face"):
            raise _error(ScanReadError, name,
                         f"the PLY {element.name} element has several list properties",
                         "export plain vertices and triangles")
    return tables


@writer(".ply")
def _write_ply(raw: RawScan, *, binary: bool = True) -> bytes:
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if raw.normals is not None else [])
    vertex = raw.points if raw.normals is None else np.hstack([raw.points, raw.normals])
    faces = raw.faces if raw.faces is not None else np.zeros((0, 3), np.int64)
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "comment orthocad scan, millimetres",
        f"element vertex {len(vertex)}",
        *(f"property double {n}" for n in names),
    ]
    if raw.faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head = ("\n".join([*header, "end_header"]) + "\n").encode("ascii")
    if not binary:
        text = _text_rows(vertex, "%.9g") + _text_rows(faces, "%d", prefix="3 ")
        return head + text
    rows = np.zeros(len(faces), np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    rows["n"], rows["i"] = 3, faces
    blob = np.ascontiguousarray(vertex, "<f8").tobytes()
    return head + blob + (rows.tobytes() if raw.faces is not None else b"")


# --------------------------------------------------------------------------- PCD

_PCD_TYPES = {"F": "f", "I": "i", "U": "u"}


@reader(".pcd")
def _read_pcd(data: bytes, name: str) -> RawScan:
    header: dict[str, list[str]] = {}
    pos = 0
    while "DATA" not in header:
        end = data.find(b"\n", pos)
        if end < 0 or pos > (1 << 16):
            raise _error(ScanReadError, name, "the PCD header has no DATA line", _FIX_EXPORT)
        words = data[pos:end].decode("ascii", errors="replace").split()
        pos = end + 1
        if words and not words[0].startswith("#"):
            header[words[0].upper()] = words[1:]
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = header["TYPE"]
        repeats = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        count = int(header["POINTS"][0]) if "POINTS" in header else (
            int(header["WIDTH"][0]) * int(header["HEIGHT"][0]))
        mode = header["DATA"][0].lower()
        dtype = np.dtype([
            (f if f != "_" else f"_{i}", f"<{_PCD_TYPES[t]}{s}", (c,) if c > 1 else ())
            for i, (f, s, t, c) in enumerate(zip(fields, sizes, types, repeats, strict=True))
        ])
        if count < 0 or min(repeats) < 1 or mode not in ("ascii", "binary", "binary_compressed"):
            raise ValueError
    except (KeyError, ValueError, IndexError, TypeError):
        raise _error(ScanReadError, name, "unreadable PCD header", _FIX_EXPORT) from None
    if not {"x", "y", "z"} <= set(fields):
        raise _error(ScanReadError, name, "the PCD fields have no x, y, z", _FIX_EXPORT)
    normal_names = ("normal_x", "normal_y", "normal_z")
    if mode == "binary_compressed":
        return _read_pcd_compressed(data, pos, count, dtype, name)
    if mode == "binary":
        need = count * dtype.itemsize
        if need > len(data) - pos:
            raise _truncated(name, f"{count:,} points", _bytes_text(need),
                             _bytes_text(len(data) - pos))
        rows = np.frombuffer(data, dtype, count, pos)
        columns = {f: rows[f].astype(np.float64) for f in dtype.names or () if f in fields}
    else:
        values, _, _ = _ascii_numbers(data[pos:], name)
        width = sum(repeats)
        if len(values) < count * width:
            raise _truncated(name, f"{count:,} points", f"{count * width:,} numbers",
                             f"{len(values):,}")
        table = values[: count * width].reshape(count, width)
        column = np.cumsum([0, *repeats])
        columns = {f: table[:, column[i]] for i, f in enumerate(fields)}
    points = np.stack([columns[k] for k in "xyz"], axis=1)
    normals = None
    if set(normal_names) <= columns.keys():
        normals = np.stack([columns[k] for k in normal_names], axis=1)
    return _raw(points, None, normals, name=name)


def _read_pcd_compressed(
    data: bytes, pos: int, count: int, dtype: np.dtype, name: str
) -> RawScan:
    """LZF is a byte-by-byte format, so open3d (C++) decodes it, after the sizes
    in the file have been checked against the header."""
    from orthocad._native import open3d

    if len(data) - pos < 8:
        raise _truncated(name, f"{count:,} compressed points", "8 bytes or more",
                         _bytes_text(len(data) - pos))
    packed, unpacked = struct.unpack_from("<II", data, pos)
    if unpacked != count * dtype.itemsize:
        raise _error(ScanReadError, name,
                     f"the compressed PCD data unpacks to {unpacked:,} bytes, not the "
                     f"{count * dtype.itemsize:,} of {count:,} points", _FIX_EXPORT)
    if packed > len(data) - pos - 8:
        raise _truncated(name, f"{count:,} compressed points", _bytes_text(packed),
                         _bytes_text(len(data) - pos - 8))
    o3d = open3d()
    with tempfile.TemporaryDirectory() as folder:
        temporary = Path(folder) / "scan.pcd"
        temporary.write_bytes(data)
        cloud = o3d.io.read_point_cloud(str(temporary), format="pcd")
    points = np.asarray(cloud.points)
    if len(points) != count:
        raise _error(ScanReadError, name, "the compressed PCD data cannot be decoded",
                     _FIX_EXPORT)
    normals = np.asarray(cloud.normals) if cloud.has_normals() else None
    return _raw(points, None, normals, name=name)


@writer(".pcd")
def _write_pcd(raw: RawScan, *, binary: bool = True) -> bytes:
    names = ["x", "y", "z"] + (
        ["normal_x", "normal_y", "normal_z"] if raw.normals is not None else [])
    table = raw.points if raw.normals is None else np.hstack([raw.points, raw.normals])
    n = len(names)
    header = "\n".join([
        "# .PCD v0.7 - orthocad scan, millimetres",
        "VERSION 0.7",
        "FIELDS " + " ".join(names),
        "SIZE " + " ".join(["8"] * n),
        "TYPE " + " ".join(["F"] * n),
        "COUNT " + " ".join(["1"] * n),
        f"WIDTH {len(table)}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {len(table)}",
        f"DATA {'binary' if binary else 'ascii'}",
    ]) + "\n"
    body = np.ascontiguousarray(table, "<f8").tobytes() if binary else _text_rows(table, "%.9g")
    return header.encode("ascii") + body


# --------------------------------------------------------------------------- XYZ / CSV / TXT


@reader(".xyz", ".csv", ".txt")
def _read_table(data: bytes, name: str) -> RawScan:
    pos, line_number = 0, 0
    while True:  # the first line that is neither blank nor a comment
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[pos:end].strip()
        if line and not line.startswith(b"#"):
            break
        if end >= len(data):
            raise _error(ScanReadError, name, "holds no points", _FIX_EXPORT)
        pos, line_number = end + 1, line_number + 1
    delimiter = "," if b"," in line else None
    tokens = [t for t in re.split(rb"[,\s]+", line) if t]
    # A header names the columns; a lone number before x y z rows is a point
    # count (.pts style), not a point.
    header = not all(map(_is_number, tokens)) or len(tokens) == 1
    names = None
    if header and len(tokens) > 1:
        names = [t.decode("ascii", errors="replace").strip("\"'").lower() for t in tokens]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                io.BytesIO(data),
                delimiter=delimiter,
                skiprows=line_number + header,
                comments="#",
                ndmin=2,
                dtype=np.float64,
            )
    except (ValueError, UnicodeDecodeError) as error:
        detail = str(error).split(";")[0]
        raise _error(ScanReadError, name, f"cannot read the rows as numbers ({detail})",
                     "give rows of x y z (or x y z nx ny nz) numbers") from None
    if table.size == 0:
        raise _error(ScanReadError, name, "holds no points", _FIX_EXPORT)
    if table.shape[1] < 3:
        raise _error(ScanReadError, name, f"has {table.shape[1]} columns",
                     "give rows of x y z (or x y z nx ny nz) numbers")
    if names is not None and len(names) == table.shape[1] and {"x", "y", "z"} <= set(names):
        points = table[:, [names.index(k) for k in "xyz"]]
        normals = None
        for triple in (("nx", "ny", "nz"), ("normal_x", "normal_y", "normal_z")):
            if set(triple) <= set(names):
                normals = table[:, [names.index(k) for k in triple]]
        return _raw(points, None, normals, name=name)
    normals = _normals_if_unit(table[:, 3:6]) if table.shape[1] >= 6 else None
    return _raw(table[:, :3], None, normals, name=name)


def _is_number(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _write_table(raw: RawScan, *, sep: str, header: bool) -> bytes:
    table = raw.points if raw.normals is None else np.hstack([raw.points, raw.normals])
    names = ["x", "y", "z", "nx", "ny", "nz"][: table.shape[1]]
    head = (sep.join(names) + "\n").encode("ascii") if header else b""
    return head + _text_rows(table, "%.9g", sep=sep)


@writer(".xyz", ".txt")
def _write_xyz(raw: RawScan, *, binary: bool = True) -> bytes:
    return _write_table(raw, sep=" ", header=False)


@writer(".csv")
def _write_csv(raw: RawScan, *, binary: bool = True) -> bytes:
    return _write_table(raw, sep=",", header=True)


# --------------------------------------------------------------------------- OBJ


@reader(".obj")
def _read_obj(data: bytes, name: str) -> RawScan:
    # Classify lines by their first bytes, all lines at once; then parse the
    # 'v', 'vn' and 'f' lines, each kind as one block of text.
    byte = np.frombuffer(data, np.uint8)
    newline = byte == 10
    starts = np.concatenate(([0], np.flatnonzero(newline) + 1))
    starts = starts[starts < len(byte)]
    padded = np.concatenate([byte, np.full(3, 10, np.uint8)])  # look-ahead never runs off
    c0, c1, c2 = padded[starts], padded[starts + 1], padded[starts + 2]
    is_v = (c0 == ord("v")) & _BLANK[c1]
    is_vn = (c0 == ord("v")) & (c1 == ord("n")) & _BLANK[c2]
    is_f = (c0 == ord("f")) & _BLANK[c1]
    line_of = np.cumsum(newline) - newline  # line of each byte (a newline ends its own line)

    def lines(mask: np.ndarray) -> bytes:
        return byte[mask[line_of]].tobytes()

    def table(mask: np.ndarray, what: str) -> np.ndarray:
        try:
            return np.loadtxt(io.BytesIO(lines(mask)), usecols=(1, 2, 3), ndmin=2,
                              dtype=np.float64, comments="#")
        except ValueError as error:
            detail = str(error).split(";")[0]
            raise _error(ScanReadError, name, f"unreadable '{what}' line ({detail})",
                         _FIX_EXPORT) from None

    if not is_v.any():
        raise _error(ScanReadError, name, "the OBJ file has no 'v' (vertex) lines", _FIX_EXPORT)
    vertices = table(is_v, "v")
    vn = table(is_vn, "vn") if is_vn.any() else np.zeros((0, 3))
    faces, normals = None, None
    if is_f.any():
        faces, normals = _obj_faces(lines(is_f), is_f, is_v, is_vn, vertices, vn, name)
    if normals is None and len(vn) == len(vertices):
        normals = vn  # no per-corner normals: vn lines pair with v lines
    return _raw(vertices, faces, normals, name=name)


def _obj_faces(
    text: bytes,
    is_f: np.ndarray,
    is_v: np.ndarray,
    is_vn: np.ndarray,
    vertices: np.ndarray,
    vn: np.ndarray,
    name: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Triangles of the 'f' lines, and per-vertex normals from their v//vn corners."""
    tokens = text.split()
    if max(map(len, tokens)) > 64:
        raise _error(ScanReadError, name, "an 'f' line holds a malformed corner", _FIX_EXPORT)
    words = np.array(tokens)
    marks = np.flatnonzero(words == b"f")
    counts = np.diff(np.append(marks, len(words))) - 1
    corners = np.delete(words, marks)
    if not corners.size:  # only bare 'f' lines (and np.strings fails on empty arrays)
        return np.zeros((0, 3), np.int64), None
    head, _, rest = np.strings.partition(corners, b"/")
    tail = np.strings.partition(rest, b"/")[2]  # v, v/t, v//n, v/t/n
    has_n = np.strings.str_len(tail) > 0
    # Negative indices count back from the last vertex (normal) defined so far.
    f_lines = np.flatnonzero(is_f)
    try:
        vi = _obj_index(head.astype(np.int64), np.repeat(np.cumsum(is_v)[f_lines], counts))
        ni = _obj_index(tail[has_n].astype(np.int64),
                        np.repeat(np.cumsum(is_vn)[f_lines], counts)[has_n])
    except ValueError:
        raise _error(ScanReadError, name, "an 'f' line holds a corner that is not an index",
                     _FIX_EXPORT) from None
    if vi.size and (vi.min() < 0 or vi.max() >= len(vertices)):
        bad = int(vi.max() + 1 if vi.max() >= len(vertices) else vi.min() + 1)
        raise _error(ScanReadError, name,
                     f"an 'f' line refers to vertex {bad}, but there are {len(vertices):,}",
                     _FIX_EXPORT)
    if ni.size and (ni.min() < 0 or ni.max() >= len(vn)):
        raise _error(ScanReadError, name, "an 'f' line refers to a missing 'vn' normal",
                     _FIX_EXPORT)
    normals = None
    if has_n.any():
        normals = np.full(vertices.shape, np.nan)
        normals[vi[has_n]] = vn[ni]
        if np.isnan(normals).any():
            normals = None  # not every vertex got one: better none than a partial set
    return _fan(counts, vi), normals


def _obj_index(index: np.ndarray, defined_before: np.ndarray) -> np.ndarray:
    """OBJ's 1-based (or negative, relative) indices as 0-based; 0 is invalid."""
    if (index == 0).any():
        raise ValueError("index 0")
    return np.where(index > 0, index - 1, defined_before + index)


@writer(".obj")
def _write_obj(raw: RawScan, *, binary: bool = True) -> bytes:
    text = [b"# orthocad scan, millimetres\n", _text_rows(raw.points, "%.9g", prefix="v ")]
    if raw.normals is not None:
        text.append(_text_rows(raw.normals, "%.9g", prefix="vn "))
    if raw.faces is not None:
        one_based = raw.faces + 1
        if raw.normals is not None:  # vertex i has normal i
            text.append(_format_rows(np.repeat(one_based, 2, axis=1), "f %d//%d %d//%d %d//%d\n"))
        else:
            text.append(_text_rows(one_based, "%d", prefix="f "))
    return b"".join(text)


# --------------------------------------------------------------------------- STL


@reader(".stl")
def _read_stl(data: bytes, name: str) -> RawScan:
    binary_count = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    # Binary files may also start with "solid", so the size decides first.
    if binary_count >= 0 and len(data) == 84 + 50 * binary_count:
        corners = _stl_binary(data, binary_count)
    elif data.lstrip()[:5].lower() == b"solid":
        corners = _stl_ascii(data, name)
    elif binary_count >= 0:
        if 84 + 50 * binary_count > len(data):
            raise _truncated(name, f"{binary_count:,} triangles",
                             _bytes_text(84 + 50 * binary_count), _bytes_text(len(data)))
        corners = _stl_binary(data, binary_count)  # trailing bytes after the triangles
    else:
        raise _error(ScanReadError, name, "not an STL file (too short, no 'solid')", _FIX_EXPORT)
    if not len(corners):
        raise _error(ScanReadError, name, "the STL file holds no triangles", _FIX_EXPORT)
    points, faces = _merge_corners(corners)
    return _raw(points, faces, None, name=name)


def _stl_binary(data: bytes, count: int) -> np.ndarray:
    dtype = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    corners = np.frombuffer(data, dtype, count, 84)["corners"].reshape(-1, 3)
    with np.errstate(invalid="ignore"):  # signalling NaNs in a corrupt file
        return corners.astype(np.float64)


def _stl_ascii(data: bytes, name: str) -> np.ndarray:
    words = data.split()
    if max(map(len, words)) > 256:
        raise _error(ScanReadError, name, "malformed ASCII STL", _FIX_EXPORT)
    words_array = np.array(words)
    at = np.flatnonzero(np.strings.lower(words_array) == b"vertex")
    if at.size % 3 or (at.size and at[-1] + 3 >= len(words_array)):
        raise _error(ScanReadError, name, "the ASCII STL is truncated", _FIX_EXPORT)
    try:
        return words_array[at[:, None] + np.arange(1, 4)].astype(np.float64)
    except ValueError:
        raise _error(ScanReadError, name, "an ASCII STL vertex is not three numbers",
                     _FIX_EXPORT) from None


def _merge_corners(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """STL repeats each vertex in every triangle that uses it: merge identical
    corners into shared vertices, numbered in order of first appearance."""
    corners = corners + 0.0  # -0.0 -> 0.0, so equal coordinates merge
    unique, first, inverse = np.unique(corners, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], rank[inverse.reshape(-1)].reshape(-1, 3)


@writer(".stl")
def _write_stl(raw: RawScan, *, binary: bool = True) -> bytes:
    if raw.faces is None or not len(raw.faces):
        raise InputError("the scan has no faces and STL holds triangles only; "
                         "write .ply, .obj or .npz, or mesh the points first")
    triangles = raw.points[raw.faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    length = np.linalg.norm(normals, axis=1)
    normals = np.divide(normals, length[:, None], out=np.zeros_like(normals),
                        where=length[:, None] > 0)
    if not binary:
        values = np.hstack([normals, triangles.reshape(-1, 9)])
        facet = (" facet normal %.9g %.9g %.9g\n  outer loop\n"
                 + "   vertex %.9g %.9g %.9g\n" * 3 + "  endloop\n endfacet\n")
        body = (facet * len(values)) % tuple(values.ravel().tolist())
        return ("solid orthocad\n" + body + "endsolid orthocad\n").encode("ascii")
    rows = np.zeros(len(triangles), np.dtype([("normal", "<f4", (3,)),
                                              ("corners", "<f4", (3, 3)),
                                              ("attribute", "<u2")]))
    rows["normal"], rows["corners"] = normals, triangles
    head = b"orthocad binary STL, millimetres".ljust(80, b" ")  # must not start with "solid"
    return head + struct.pack("<I", len(rows)) + rows.tobytes()


# --------------------------------------------------------------------------- NPY / NPZ


def _npy_array(stream: io.BufferedIOBase, available: int, name: str, what: str) -> np.ndarray:
    """One .npy array from a stream, its header checked against the bytes available
    before the data are read (a header may claim any shape)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
        shape, fortran_order, dtype = read_header[version](stream)
    except (ValueError, KeyError, OSError, EOFError, SyntaxError, TokenError):
        raise _error(ScanReadError, name, f"{what} is not a readable .npy array",
                     "save it with numpy.save") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise _error(ScanReadError, name, f"{what} holds {dtype} values, not numbers",
                     "save a numeric array")
    need = math.prod(shape) * dtype.itemsize
    have = available - stream.tell()
    if need > have:
        raise _truncated(name, f"{what} of shape {shape}", _bytes_text(need), _bytes_text(have))
    if need > MAX_POINTS * 48:
        raise _error(ScanReadError, name, f"{what} is {_bytes_text(need)}, too large",
                     "downsample the scan")
    buffer = stream.read(need)
    if len(buffer) < need:
        raise _truncated(name, f"{what} of shape {shape}", _bytes_text(need),
                         _bytes_text(len(buffer)))
    array = np.frombuffer(buffer, dtype, math.prod(shape))
    return array.reshape(shape, order="F" if fortran_order else "C")


@reader(".npy")
def _read_npy(data: bytes, name: str) -> RawScan:
    array = _npy_array(io.BytesIO(data), len(data), name, "the array")
    if array.ndim != 2 or array.shape[1] not in (3, 6):
        raise _error(ScanReadError, name, f"the array has shape {array.shape}",
                     "save an N x 3 (x y z) or N x 6 (with normals) array")
    return _raw(array[:, :3], None, array[:, 3:] if array.shape[1] == 6 else None, name=name)


@reader(".npz")
def _read_npz(data: bytes, name: str) -> RawScan:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {Path(n).stem: archive.getinfo(n) for n in archive.namelist()
                       if n.endswith(".npy")}
            key = next((k for k in ("points", "vertices") if k in members), None)
            if key is None:
                raise _error(ScanReadError, name,
                             f"holds no 'points' or 'vertices' array (has {sorted(members)})",
                             "save the points as numpy.savez(path, points=...)")
            arrays = {}
            for k in (key, "faces", "normals"):
                if k in members:
                    with archive.open(members[k]) as stream:
                        arrays[k] = _npy_array(stream, members[k].file_size, name, f"'{k}'")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
            RuntimeError):  # what zipfile raises on corrupt archives
        raise _error(ScanReadError, name, "not a readable .npz (zip) archive",
                     "save it with numpy.savez") from None
    return _raw(arrays[key], arrays.get("faces"), arrays.get("normals"), name=name)


@writer(".npy")
def _write_npy(raw: RawScan, *, binary: bool = True) -> bytes:
    table = raw.points if raw.normals is None else np.hstack([raw.points, raw.normals])
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(table, np.float64))
    return buffer.getvalue()


@writer(".npz")
def _write_npz(raw: RawScan, *, binary: bool = True) -> bytes:
    arrays = {"points": raw.points}
    if raw.faces is not None:
        arrays["faces"] = raw.faces
    if raw.normals is not None:
        arrays["normals"] = raw.normals
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _write_atomic(path: Path, blob: bytes) -> None:
    if not path.parent.is_dir():
        raise _error(InputError, path.name, f"the folder {path.parent} does not exist",
                     "create it first")
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(blob)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise _error(InputError, path.name, f"cannot write the file ({error.strerror})",
                     "check the folder's permissions and free space") from None


#: Suffixes :func:`read` accepts, for messages and file dialogs.
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(sorted(READERS))
