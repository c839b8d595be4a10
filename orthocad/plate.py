"""Build plates: finished insoles nested onto as few printer beds as possible.

Each part is its footprint on the bed (the mesh's shadow on z = 0, a union of
its projected triangles); parts turn freely in the plane (never mirrored) and
keep ``gap_mm`` from each other and ``edge_mm`` (by default the gap) from the
bed's edges, so a slicer's skirt still fits.

Method: greedy raster placement with exact finishing, several strategies, merging.

* The usable bed is a grid of ``CELL_MM`` cells. A unit (one part, or a
  case's pair nested as one rigid body), turned by each candidate angle (every
  ``ANGLE_STEP_DEG`` plus the four sides of its minimum-area rectangle), marks
  every cell its footprint grown by half the gap could touch (conservatively:
  cells whose centre lies within gap/2 + half a cell diagonal). Units whose
  marked cells are disjoint are at least the gap apart; every free position of
  every angle comes at once from FFT correlations of the unit's cells with the
  plate's.
* Of the free positions, the one that grows the plate's occupied bounding box
  least wins (or, by the other strategy, the lowest), then the lowest, then
  the leftmost; the unit is then slid down and left in exact geometry
  (shapely distances) to close the gap the cells waste.
* A pair is nested head to toe (or alongside) once: the second insole slides
  against the first at a range of lengthwise offsets, the tightest enclosing
  rectangle wins. It goes on a plate nested, else as two parts placed apart,
  always on one plate.
* Cases go in order of decreasing area onto the first of the last
  ``_OPEN_PLATES`` plates that takes them, else onto a new plate. Four
  strategies (which insole of a pair stays put, least growth or lowest) each
  pack everything; the run with the fewest plates is kept. Then the emptiest
  plate is repacked together with another onto one plate while that succeeds.
* A pair that does not fit one empty bed together is split (the reason is
  recorded); a part that fits no bed at any angle is listed in ``unplaced``
  with its reason, never dropped.

Placements are rigid 2D transforms: the placed outline is ``R(angle) · p +
offset``, and :func:`write_plate_3mf` moves each mesh by the same transform
(and sets its lowest point on z = 0).
"""

from __future__ import annotations

import itertools
import math
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad.enums import Side
from orthocad.errors import InputError

if TYPE_CHECKING:
    import shapely
    import trimesh

CELL_MM = 2.0  #: raster cell of the position search (exact sliding recovers what it wastes)
ANGLE_STEP_DEG = 15.0  #: candidate rotations: every this many degrees, plus the min-area rectangle
FOOTPRINT_TOLERANCE_MM = 0.1  #: footprints are grown this much, then simplified by half of it

_SLIDE_MM = 3 * CELL_MM  # how far the exact finishing slides a part
_SLIDE_STEPS = 7  # bisection steps of one slide (≈ 0.05 mm)
_TOUCH_MM = 1e-6  # rounding allowance of the exact checks
_FIT_ANGLE_STEP_DEG = 0.5  # angle scan of the exact "fits an empty bed at all" test
_OPEN_PLATES = 3  # plates a new group may go on besides a new one: time grows with this
_MERGE_CANDIDATES = 4  # merging repacks the emptiest plate with some of these next emptiest
_NEST_OFFSETS = 13  # lengthwise offsets tried when nesting a pair …
_NEST_SHIFT = 0.15  # … up to this fraction of the first part's length either way
_APPROACH_STEPS = 60  # a pair's second insole slides toward the first at most this many steps …
_APPROACH_DONE_MM = 0.05  # … and stops when a step gets this small
_NO_KEY = np.iinfo(np.int64).max  # an occupied position's score
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same plate gives the same bytes
_INSOLE_FILE = re.compile(r"(?P<case>.+)_(?P<side>left|right)\.stl", re.IGNORECASE)
_PLATE_FILE = re.compile(r"plate_[0-9]+\.3mf")
_BED = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*[x×X*]\s*([0-9]+(?:\.[0-9]*)?)\s*")


@dataclass(frozen=True, eq=False)
class Part:
    """One insole to place: its case, its side and its footprint outline (K×2, mm)."""

    case_id: str
    side: Side
    outline_mm: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.case_id}_{self.side.value}"

    @cached_property
    def area_mm2(self) -> float:
        return float(_polygon(self.outline_mm).area)


@dataclass(frozen=True, eq=False)
class Placement:
    """Where one part goes: ``placed = R(angle_deg) · outline + offset_mm``."""

    part: Part
    angle_deg: float
    offset_mm: tuple[float, float]
    outline_mm: np.ndarray  #: the placed outline, bed coordinates

    @property
    def matrix(self) -> np.ndarray:
        """The placement as a 4×4 homogeneous transform (a rotation about z, then a shift)."""
        c, s = math.cos(math.radians(self.angle_deg)), math.sin(math.radians(self.angle_deg))
        return np.array([[c, -s, 0, self.offset_mm[0]], [s, c, 0, self.offset_mm[1]],
                         [0, 0, 1, 0], [0, 0, 0, 1.0]])


@dataclass(frozen=True)
class Plate:
    """One bed's parts."""

    number: int  #: from 1
    bed_mm: tuple[float, float]
    placements: tuple[Placement, ...]

    @property
    def fill(self) -> float:
        """Fraction of the bed's area the parts cover."""
        return sum(p.part.area_mm2 for p in self.placements) / (self.bed_mm[0] * self.bed_mm[1])


@dataclass(frozen=True)
class Unplaced:
    """A part that fits no bed, and why."""

    part: Part
    reason: str


@dataclass(frozen=True)
class Packing:
    """Every part either on a plate or in ``unplaced``."""

    plates: tuple[Plate, ...]
    unplaced: tuple[Unplaced, ...]
    split: tuple[tuple[str, str], ...]  #: (case id, why its left and right are on two plates)
    bed_mm: tuple[float, float]
    gap_mm: float
    edge_mm: float

    @property
    def area_bound(self) -> int:
        """A lower bound on the plates needed: the placed parts' area over the bed's."""
        area = sum(p.part.area_mm2 for plate in self.plates for p in plate.placements)
        return math.ceil(area / (self.bed_mm[0] * self.bed_mm[1]) - 1e-9)


def parse_bed(text: str) -> tuple[float, float]:
    """``"380x284"`` → (380.0, 284.0): the bed's width and depth in mm."""
    match = _BED.fullmatch(text)
    if not match or not all(0 < float(v) <= 10_000 for v in match.groups()):
        raise InputError(f"bed {text!r} is not WIDTHxDEPTH in mm; write e.g. --bed 380x284")
    return float(match[1]), float(match[2])


def footprint(mesh: trimesh.Trimesh, *, tolerance_mm: float = FOOTPRINT_TOLERANCE_MM
              ) -> np.ndarray:
    """The mesh's shadow on z = 0 as one outline (K×2, counter-clockwise), covering it all.

    The union of the projected triangles (for a closed mesh only the
    downward-facing ones: they already cover its shadow), grown by
    ``tolerance_mm`` and simplified by half that: the outline lies between 0.5
    and 1.5 × ``tolerance_mm`` outside the shadow, never cutting the part.
    """
    import shapely

    faces = mesh.face_normals[:, 2] < 0 if mesh.is_watertight else slice(None)
    triangles = mesh.triangles[faces][:, :, :2]
    doubled_area = np.abs(np.cross(triangles[:, 1] - triangles[:, 0],
                                   triangles[:, 2] - triangles[:, 0]))
    union = shapely.union_all(shapely.polygons(triangles[doubled_area > 1e-12]))
    if union.is_empty:
        raise InputError("the mesh has no footprint on the bed (no triangle covers any area "
                         "seen from above); check the file")
    shape = union.buffer(tolerance_mm, quad_segs=2).simplify(tolerance_mm / 2)
    if shape.geom_type != "Polygon":  # separate islands: pack them as one rigid outline
        shape = shape.convex_hull
    return np.asarray(shapely.geometry.polygon.orient(shape, 1.0).exterior.coords)[:-1]


def pack(parts: Iterable[Part], *, bed_mm: tuple[float, float], gap_mm: float,
         edge_mm: float | None = None) -> Packing:
    """Nest ``parts`` onto as few beds of ``bed_mm`` (width, depth) as possible (module doc)."""
    parts = list(parts)
    edge = gap_mm if edge_mm is None else edge_mm
    if gap_mm < 0 or edge < 0 or min(bed_mm) <= 2 * edge:
        raise InputError(f"gap {gap_mm:g} mm, edge {edge:g} mm on a {_size(bed_mm)} bed leave no "
                         "room; use a gap and edge of 0 or more and smaller than half the bed")
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InputError(f"{', '.join(twice)} given more than once; give each insole once")
    return _Packer(bed_mm, gap_mm, edge).run(parts)


def write_plate_3mf(plate: Plate, meshes: Mapping[str, trimesh.Trimesh], path: str | Path
                    ) -> Path:
    """One 3MF (mm) with each part's mesh, placed, as an object named ``<case>_<side>``.

    ``meshes`` maps a part's name to its mesh in the frame its outline was
    taken in. Same plate, same bytes: fixed zip dates, fixed number format.
    """
    from lxml import etree

    path = Path(path)
    core = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
    model = etree.Element("model", nsmap={None: core}, unit="millimeter")
    model.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    resources = etree.SubElement(model, "resources")
    build = etree.SubElement(model, "build")
    for number, placement in enumerate(plate.placements, start=1):
        mesh = meshes[placement.part.name]
        vertices = mesh.vertices @ placement.matrix[:3, :3].T + placement.matrix[:3, 3]
        vertices[:, 2] -= vertices[:, 2].min()
        item = etree.SubElement(resources, "object", id=str(number),
                                name=placement.part.name, type="model")
        body = etree.SubElement(item, "mesh")
        vertex_list = etree.SubElement(body, "vertices")
        for x, y, z in vertices:
            etree.SubElement(vertex_list, "vertex", x=f"{x:.4f}", y=f"{y:.4f}", z=f"{z:.4f}")
        triangle_list = etree.SubElement(body, "triangles")
        for a, b, c in mesh.faces:
            etree.SubElement(triangle_list, "triangle", v1=str(a), v2=str(b), v3=str(c))
        etree.SubElement(build, "item", objectid=str(number))
    files = {
        "[Content_Types].xml": _CONTENT_TYPES,
        "_rels/.rels": _RELS,
        "3D/3dmodel.model": etree.tostring(model, xml_declaration=True, encoding="UTF-8"),
    }
    temporary = path.with_name(f".{path.name}.part")
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items():
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


PLATE_CSV_COLUMNS = ("plate", "name", "case_id", "side", "angle_deg", "x_mm", "y_mm",
                     "area_mm2", "note")


def write_plate_csv(packing: Packing, path: str | Path) -> Path:
    """One row per part: its plate (empty when unplaced), its transform and any note."""
    import csv

    path = Path(path)
    split = dict(packing.split)
    rows = []
    for plate in packing.plates:
        for p in plate.placements:
            rows.append([f"{plate.number:02d}", p.part.name, p.part.case_id, p.part.side.value,
                         f"{p.angle_deg:.2f}", f"{p.offset_mm[0]:.3f}", f"{p.offset_mm[1]:.3f}",
                         f"{p.part.area_mm2:.0f}", split.get(p.part.case_id, "")])
    for miss in packing.unplaced:
        rows.append(["", miss.part.name, miss.part.case_id, miss.part.side.value, "", "", "",
                     f"{miss.part.area_mm2:.0f}", f"unplaced: {miss.reason}"])
    temporary = path.with_name(f".{path.name}.part")
    try:
        with temporary.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(PLATE_CSV_COLUMNS)
            writer.writerows(rows)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def find_insoles(folder: str | Path) -> dict[tuple[str, Side], Path]:
    """Finished insoles under ``folder``: ``**/<case>_left.stl`` and ``**/<case>_right.stl``.

    That covers a flat folder and the per-case layout
    ``<case>/{left,right}/<case>_<side>.stl``; the case id is the file name
    before ``_left`` or ``_right``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of finished insoles")
    found: dict[tuple[str, Side], Path] = {}
    for path in sorted(folder.rglob("*")):
        match = _INSOLE_FILE.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        key = (match["case"], Side(match["side"].lower()))
        if key in found:
            raise InputError(f"{found[key]} and {path} are both {key[0]}'s {key[1].value} insole; "
                             "keep one of them")
        found[key] = path
    if not found:
        raise InputError(f"{folder}: no insoles found (files named <case>_left.stl or "
                         "<case>_right.stl, in any subfolder); check the folder")
    return found


@dataclass(frozen=True)
class PlateFiles:
    packing: Packing
    plates: tuple[Path, ...]  #: plate_NN.3mf, in plate order
    csv: Path


def plate_folder(folder: str | Path, *, bed_mm: tuple[float, float], gap_mm: float,
                 out: str | Path) -> PlateFiles:
    """Pack the insoles under ``folder`` (:func:`find_insoles`); write the plates to ``out``."""
    meshes: dict[str, trimesh.Trimesh] = {}
    parts = []
    for (case_id, side), path in find_insoles(folder).items():
        mesh = _load_stl(path)
        parts.append(Part(case_id, side, footprint(mesh)))
        meshes[parts[-1].name] = mesh
    packing = pack(parts, bed_mm=bed_mm, gap_mm=gap_mm)
    return write_plates(packing, meshes, out)


def write_plates(packing: Packing, meshes: Mapping[str, trimesh.Trimesh], out: str | Path
                 ) -> PlateFiles:
    """``out``/plate_NN.3mf for every plate and ``out``/plates.csv, replacing an earlier set.

    Everything is written to a temporary folder inside ``out`` first; plate
    files of an earlier run beyond the new count are removed.
    """
    import shutil
    import tempfile

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".plates-", dir=out))
    try:
        names = [f"plate_{plate.number:02d}.3mf" for plate in packing.plates]
        for plate, name in zip(packing.plates, names, strict=True):
            write_plate_3mf(plate, meshes, staging / name)
        write_plate_csv(packing, staging / "plates.csv")
        for stale in out.iterdir():
            if _PLATE_FILE.fullmatch(stale.name) and stale.name not in names:
                stale.unlink()
        for name in [*names, "plates.csv"]:
            (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PlateFiles(packing, tuple(out / name for name in names), out / "plates.csv")


def _load_stl(path: Path) -> trimesh.Trimesh:
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as bad:  # trimesh raises many kinds on a broken file
        raise InputError(f"{path}: cannot read this STL ({bad}); export it again") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise InputError(f"{path}: the STL holds no triangles; export it again")
    return mesh


_CONTENT_TYPES = b"""<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="model" ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>
</Types>
"""
_RELS = b"""<?xml version="1.0" encoding="UTF-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Target="/3D/3dmodel.model" Id="rel0"
 Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>
</Relationships>
"""


# --- the packer -------------------------------------------------------------------------------


def _polygon(outline: np.ndarray) -> shapely.Polygon:
    import shapely

    return shapely.Polygon(outline)


def _size(bed_mm: tuple[float, float]) -> str:
    return f"{bed_mm[0]:g}×{bed_mm[1]:g} mm"


def _rotation(angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[c, -s], [s, c]])


@dataclass(frozen=True)
class _Strategy:
    """One greedy run's choices; :func:`pack` keeps the run with the fewest plates."""

    swap_pairs: bool  #: nest a pair around its smaller part (the mirror-image arrangement)
    lowest: bool  #: take the lowest free position, not the one growing the occupied box least


_STRATEGIES = (_Strategy(False, False), _Strategy(True, False), _Strategy(False, True),
               _Strategy(True, True))


@dataclass(frozen=True, eq=False)
class _Unit:
    """Parts moved as one rigid body: each part's (angle, offset) in the unit's frame."""

    parts: tuple[Part, ...]
    poses: tuple[tuple[float, np.ndarray], ...]

    def outlines(self, angle_deg: float) -> list[np.ndarray]:
        """The parts' outlines with the unit turned by ``angle_deg`` about its origin."""
        turn = _rotation(angle_deg).T
        return [(part.outline_mm @ _rotation(angle).T + offset) @ turn
                for part, (angle, offset) in zip(self.parts, self.poses, strict=True)]


def _single(part: Part) -> _Unit:
    return _Unit((part,), ((0.0, np.zeros(2)),))


@dataclass(frozen=True, eq=False)
class _Variant:
    """A unit turned by one angle, with its cells."""

    unit: _Unit
    angle_deg: float
    outlines: tuple[np.ndarray, ...]  #: turned and shifted so their bounding box starts at 0
    origin: np.ndarray  #: what was subtracted after turning (the turned outlines' minimum)
    cells: np.ndarray  #: bool (rows, cols)
    count: int  #: marked cells


@dataclass(frozen=True, eq=False)
class _Variants:
    """A unit at every candidate angle, with the spectra of their flipped cells stacked."""

    items: tuple[_Variant, ...]
    spectra: np.ndarray  #: (len(items), *rfft2 shape)


@dataclass(eq=False)
class _Plate:
    occupied: np.ndarray  #: bool grid of marked cells
    spectrum: np.ndarray
    placements: list[Placement]
    shapes: list[Any]  #: shapely polygons of the placements, same order
    box: tuple[int, int, int, int] | None  #: occupied cells' (row0, col0, row1, col1), exclusive
    groups: list[tuple[Part, ...]] = field(default_factory=list)  #: what was placed, as placed

    def snapshot(self) -> tuple:
        return (self.occupied.copy(), self.spectrum, list(self.placements), list(self.shapes),
                self.box)

    def restore(self, saved: tuple) -> None:
        self.occupied, self.spectrum, self.placements, self.shapes, self.box = saved


class _Packer:
    def __init__(self, bed_mm: tuple[float, float], gap: float, edge: float) -> None:
        import scipy.fft

        self.bed = (float(bed_mm[0]), float(bed_mm[1]))
        self.gap, self.edge = float(gap), float(edge)
        self.usable = np.array(self.bed) - 2 * self.edge
        # The grid covers the usable bed grown by half the gap (marked cells hold parts + gap/2).
        self.origin = np.array([edge - gap / 2, edge - gap / 2])
        width, depth = self.usable + gap
        self.shape = (int(depth // CELL_MM), int(width // CELL_MM))  # rows (y), cols (x)
        # Circular correlation is exact on the window of whole-part positions once the FFT
        # spans the grid: wrapped terms land only at positions where the part sticks out.
        self.fft_shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in self.shape)
        self.plates: list[_Plate] = []
        self.strategy = _STRATEGIES[0]
        self.cache: dict[tuple[str, ...], Any] = {}  # per part and pair: what no run changes

    # -- driver

    def run(self, parts: list[Part]) -> Packing:
        """Every strategy's greedy packing; the one with the fewest plates, then merged."""
        groups, unplaced, split = self._groups(parts)
        area = sum(part.area_mm2 for group in groups for part in group)
        bound = math.ceil(area / (self.usable[0] * self.usable[1]) - 1e-9)  # none can do better
        best: list[_Plate] | None = None
        for strategy in _STRATEGIES:
            self.strategy, self.plates = strategy, []
            for group in groups:
                self._place(group)
            if best is None or len(self.plates) < len(best):
                best = self.plates
            if len(best) <= bound:
                break
        self.plates = best
        self._merge()
        plates = tuple(Plate(n, self.bed, tuple(p.placements))
                       for n, p in enumerate(self.plates, start=1))
        return Packing(plates, tuple(unplaced), tuple(split), self.bed, self.gap, self.edge)

    def _groups(self, parts: list[Part]
                ) -> tuple[list[tuple[Part, ...]], list[Unplaced], list[tuple[str, str]]]:
        """What must share a plate (a case's pair), largest first; what fits no bed; splits."""
        by_case: dict[str, list[Part]] = {}
        for part in parts:
            by_case.setdefault(part.case_id, []).append(part)
        groups: list[tuple[Part, ...]] = []
        unplaced: list[Unplaced] = []
        split: list[tuple[str, str]] = []
        for case_id, group in by_case.items():
            fitting = []
            for part in sorted(group, key=lambda p: (-p.area_mm2, p.side.value)):
                reason = self._misfit(part.outline_mm)
                if reason:
                    unplaced.append(Unplaced(part, reason))
                else:
                    fitting.append(part)
            if len(fitting) == 2 and not self._place(tuple(fitting), trial_only=True):
                split.append((case_id, "left and right do not fit one bed together"))
                groups.extend((part,) for part in fitting)
            elif fitting:
                groups.append(tuple(fitting))
                if len(fitting) < len(group):
                    split.append((case_id, f"the {unplaced[-1].part.side.value} insole fits no "
                                           "bed"))
        groups.sort(key=lambda g: (-sum(p.area_mm2 for p in g), g[0].case_id, g[0].side.value))
        unplaced.sort(key=lambda miss: miss.part.name)
        return groups, unplaced, sorted(split)

    def _place(self, group: tuple[Part, ...], *, trial_only: bool = False) -> bool:
        """Put the group on the first open plate that takes it all, a new one if none does.

        The last ``_OPEN_PLATES`` plates are open; earlier ones count as full (the
        merging at the end still fills them). ``trial_only``: only say whether it
        fits an empty bed. A single part that fits the bed only between cell
        positions is centred on a plate of its own.
        """
        for plate in ([] if trial_only else self.plates[-_OPEN_PLATES:]) + [None]:
            trial = plate or self._empty()
            if any(self._all(trial, units) for units in self._options(group)):
                trial.groups.append(group)
                if plate is None and not trial_only:
                    self.plates.append(trial)
                return True
        if len(group) == 2:
            return False
        (part,) = group
        plate = self._empty()
        turned = part.outline_mm @ _rotation(angle := self._exact_fit(part.outline_mm)).T
        centre = (turned.min(axis=0) + turned.max(axis=0)) / 2
        self._record(plate, part, angle, np.array(self.bed) / 2 - centre)
        plate.groups.append(group)
        if not trial_only:
            self.plates.append(plate)
        return True

    def _options(self, group: tuple[Part, ...]) -> list[list[_Variants]]:
        """Ways to place a group, each a list of rigid units: a pair nested, then apart."""
        if len(group) == 1:
            return [[self._single_variants(group[0])]]
        parts = list(group[::-1] if self.strategy.swap_pairs else group)
        names = tuple(part.name for part in parts)
        nested = self._cached(("nest", *names), self._nest, parts)
        options = [[self._single_variants(part) for part in parts]]
        if nested:
            options.insert(0, [self._cached(("variants", *names), self._variants, nested)])
        return options

    def _all(self, plate: _Plate, units: list[_Variants]) -> bool:
        """Place every unit on the plate, or none (the plate is left as it was)."""
        saved = plate.snapshot()
        for variants in units:
            found = self._best(plate, variants)
            if found is None:
                plate.restore(saved)
                return False
            self._commit(plate, *found)
        return True

    def _merge(self) -> None:
        """Save plates: repack the emptiest with one other onto one plate, or with two others
        onto two, while either works (others taken from the emptiest few)."""
        while len(self.plates) > 1 and (self._merge_into(1) or self._merge_into(2)):
            pass

    def _merge_into(self, keep: int) -> bool:
        emptiest = min(self.plates, key=_area_on)
        others = sorted((p for p in self.plates if p is not emptiest), key=_area_on)
        capacity = keep * self.usable[0] * self.usable[1]
        for chosen in itertools.combinations(others[:_MERGE_CANDIDATES], keep):
            plates = [emptiest, *chosen]
            if sum(_area_on(p) for p in plates) > capacity:
                continue
            repacked = self._repack([g for p in plates for g in p.groups], keep)
            if repacked is not None:
                self.plates = [p for p in self.plates if p not in plates] + repacked
                return True
        return False

    def _repack(self, groups: list[tuple[Part, ...]], count: int) -> list[_Plate] | None:
        """All groups (largest first) first-fit onto ``count`` new plates by any strategy."""
        groups = sorted(groups, key=lambda g: -sum(p.area_mm2 for p in g))
        for strategy in _STRATEGIES:
            self.strategy = strategy
            plates = [self._empty() for _ in range(count)]
            for group in groups:
                home = next((plate for plate in plates if any(
                    self._all(plate, units) for units in self._options(group))), None)
                if home is None:
                    break
                home.groups.append(group)
            else:
                return plates
        return None

    # -- geometry of one unit

    def _cached(self, key: tuple[str, ...], compute: Any, *args: Any) -> Any:
        if key not in self.cache:
            self.cache[key] = compute(*args)
        return self.cache[key]

    def _single_variants(self, part: Part) -> _Variants:
        return self._cached(("variants", part.name), self._variants, _single(part))

    def _nest(self, parts: list[Part]) -> _Unit | None:
        """The pair as one unit, the second head to toe (or alongside) against the first.

        Both are turned along their long axes; the second slides toward the first
        from above or below at a range of lengthwise offsets until it is one gap
        away; the arrangement with the smallest enclosing rectangle wins. None when
        that does not fit an empty bed.
        """
        import shapely

        first, second = parts
        first_angle = -_long_axis_deg(first.outline_mm)
        a, a_shift = _turned(first.outline_mm, first_angle)
        a_shape = shapely.Polygon(a)
        best = None
        for turn in (180.0, 0.0):
            angle = -_long_axis_deg(second.outline_mm) + turn
            b, b_shift = _turned(second.outline_mm, angle)
            b_shape = shapely.Polygon(b)
            for above in (True, False):
                start_y = a[:, 1].max() + self.gap if above else -b[:, 1].max() - self.gap
                toward = np.array([0.0, -1.0 if above else 1.0])
                for dx in np.linspace(-_NEST_SHIFT, _NEST_SHIFT, _NEST_OFFSETS) * np.ptp(a[:, 0]):
                    offset = np.array([dx, start_y])
                    offset += toward * _approach(a_shape, b_shape, offset, toward, self.gap)
                    both = np.vstack([a, b + offset])
                    area = shapely.MultiPoint(both).minimum_rotated_rectangle.area
                    if best is None or area < best[0]:
                        best = (area, both, (angle, b_shift + offset))
        _, both, second_pose = best
        if self._exact_fit(both) is None:
            return None
        return _Unit(tuple(parts), ((first_angle, a_shift), second_pose))

    def _variants(self, unit: _Unit) -> _Variants:
        import scipy.fft
        import shapely

        points = np.vstack(unit.outlines(0.0))
        square = _long_axis_deg(points)
        angles = np.concatenate([np.arange(0.0, 360.0, ANGLE_STEP_DEG),
                                 -square + 90.0 * np.arange(4)]) % 360.0
        kept: list[float] = []
        for angle in angles:
            if all(abs((angle - k + 180) % 360 - 180) > 0.5 for k in kept):
                kept.append(float(angle))
        reach = (self.gap / 2 + CELL_MM / math.sqrt(2)) / math.cos(math.pi / 32)
        variants = []
        for angle in kept:
            turned = unit.outlines(angle)
            origin = np.vstack(turned).min(axis=0)
            outlines = tuple(outline - origin for outline in turned)
            rows, cols = (math.ceil((extent + self.gap) / CELL_MM - 1e-9)
                          for extent in np.vstack(outlines).max(axis=0)[::-1])
            if rows > self.shape[0] or cols > self.shape[1]:
                continue
            # Cell (r, k) is marked when its centre lies within gap/2 + half a cell diagonal of
            # an outline (shifted by gap/2 so the grown footprint starts at 0); the buffer's
            # polygon is circumscribed (the cos factor) so it never misses a cell.
            grown = shapely.union_all([shapely.Polygon(outline + self.gap / 2).buffer(
                reach, quad_segs=8) for outline in outlines])
            cells = _raster(grown, 0.0, 0.0, rows, cols)
            variants.append(_Variant(unit, angle, outlines, origin, cells, int(cells.sum())))
        flipped = np.zeros((len(variants), *self.shape), np.float32)
        for k, variant in enumerate(variants):
            rows, cols = variant.cells.shape
            flipped[k, :rows, :cols] = variant.cells[::-1, ::-1]
        return _Variants(tuple(variants), scipy.fft.rfft2(flipped, s=self.fft_shape))

    def _misfit(self, outline: np.ndarray) -> str | None:
        """Why an outline fits no empty bed at any angle, or None when it fits."""
        if self._exact_fit(outline) is not None:
            return None
        narrow = min((np.sort(np.ptp(outline @ _rotation(angle).T, axis=0))
                      for angle in np.arange(0.0, 180.0, _FIT_ANGLE_STEP_DEG)),
                     key=lambda size: size[0])
        return (f"{narrow[0]:.0f}×{narrow[1]:.0f} mm at its narrowest does not fit the "
                f"{_size(self.usable)} usable bed ({_size(self.bed)} less {self.edge:g} mm "
                "edges) at any rotation")

    def _exact_fit(self, outline: np.ndarray) -> float | None:
        """An angle at which the outline's bounding box fits the usable bed, or None."""
        for angle in np.arange(0.0, 180.0, _FIT_ANGLE_STEP_DEG):
            if np.all(np.ptp(outline @ _rotation(angle).T, axis=0) <= self.usable):
                return float(angle)
        return None

    # -- the search on one plate

    def _empty(self) -> _Plate:
        occupied = np.zeros(self.shape, bool)
        return _Plate(occupied, self._spectrum(occupied), [], [], None)

    def _spectrum(self, occupied: np.ndarray) -> np.ndarray:
        import scipy.fft

        return scipy.fft.rfft2(occupied.astype(np.float32), s=self.fft_shape)

    def _best(self, plate: _Plate, variants: _Variants) -> tuple[_Variant, int, int] | None:
        """The best free position over all angles: the strategy's measure, then lowest, leftmost.

        One FFT correlation per angle counts, for every position, the cells the
        unit would share with the plate's; zero is free.
        """
        import scipy.fft

        free_cells = self.shape[0] * self.shape[1] - int(plate.occupied.sum())
        fitting = [k for k, v in enumerate(variants.items) if v.count <= free_cells]
        if not fitting:
            return None
        spectra = variants.spectra if len(fitting) == len(variants.items) else \
            variants.spectra[fitting]
        overlaps = scipy.fft.irfft2(plate.spectrum * spectra, s=self.fft_shape, workers=-1)
        best_key, best = None, None
        for overlap, k in zip(overlaps, fitting, strict=True):
            variant = variants.items[k]
            rows, cols = variant.cells.shape
            free = overlap[rows - 1:self.shape[0], cols - 1:self.shape[1]] < 0.5
            if self.strategy.lowest or plate.box is None:
                free_rows = free.any(axis=1)
                if not free_rows.any():
                    continue
                r = int(np.argmax(free_rows))
                c = int(np.argmax(free[r]))
                first = r + rows if self.strategy.lowest else 0  # the lowest top edge
            else:  # the least growth of the occupied box
                r0, c0, r1, c1 = plate.box
                span = np.arange(free.shape[0])
                height = np.maximum(r1, span + rows) - np.minimum(r0, span)
                span = np.arange(free.shape[1])
                width = np.maximum(c1, span + cols) - np.minimum(c0, span)
                growth = np.where(free, height[:, None] * width[None, :], _NO_KEY)
                first = int(growth.min())
                if first == _NO_KEY:
                    continue
                r, c = np.unravel_index(int(np.argmax(growth == first)), growth.shape)
            key = (first, int(r), int(c))
            if best_key is None or key < best_key:
                best_key, best = key, (variant, int(r), int(c))
        return best

    def _commit(self, plate: _Plate, variant: _Variant, row: int, col: int) -> None:
        """Place the unit at a free cell position, slide it tight and mark its parts."""
        # The grown footprint starts at the cell's corner: the outlines gap/2 inside it.
        shift = self.origin + np.array([col, row]) * CELL_MM + self.gap / 2
        shift = shift + self._slide(plate, [outline + shift for outline in variant.outlines])
        turn = _rotation(variant.angle_deg)
        for part, (angle, offset) in zip(variant.unit.parts, variant.unit.poses, strict=True):
            self._record(plate, part, (variant.angle_deg + angle) % 360.0,
                         turn @ offset - variant.origin + shift)

    def _record(self, plate: _Plate, part: Part, angle: float, offset: np.ndarray) -> None:
        import shapely

        outline = part.outline_mm @ _rotation(angle).T + offset
        polygon = shapely.Polygon(outline)
        plate.placements.append(Placement(part, angle, (float(offset[0]), float(offset[1])),
                                          outline))
        plate.shapes.append(polygon)
        # Mark the cells of the exact placed outline (it may sit between cell positions now).
        reach = (self.gap / 2 + CELL_MM / math.sqrt(2)) / math.cos(math.pi / 32)
        grown = polygon.buffer(reach, quad_segs=8)
        x0, y0, x1, y1 = grown.bounds
        c0 = max(0, int((x0 - self.origin[0]) // CELL_MM))
        r0 = max(0, int((y0 - self.origin[1]) // CELL_MM))
        c1 = min(self.shape[1], math.ceil((x1 - self.origin[0]) / CELL_MM))
        r1 = min(self.shape[0], math.ceil((y1 - self.origin[1]) / CELL_MM))
        corner = self.origin + np.array([c0, r0]) * CELL_MM
        plate.occupied[r0:r1, c0:c1] |= _raster(grown, *corner, r1 - r0, c1 - c0)
        plate.spectrum = self._spectrum(plate.occupied)
        box = (r0, c0, r1, c1)
        plate.box = box if plate.box is None else (
            min(plate.box[0], r0), min(plate.box[1], c0),
            max(plate.box[2], r1), max(plate.box[3], c1))

    def _slide(self, plate: _Plate, outlines: list[np.ndarray]) -> np.ndarray:
        """How far the outlines can move down, then left, then down again (exact geometry)."""
        import shapely

        polygons = shapely.polygons([shapely.linearrings(o) for o in outlines])
        moved = np.zeros(2)
        for direction in (np.array([0.0, -1.0]), np.array([-1.0, 0.0]), np.array([0.0, -1.0])):
            low, high = 0.0, _SLIDE_MM
            for _ in range(_SLIDE_STEPS):
                middle = (low + high) / 2
                if self._fits(plate, _shifted(polygons, moved + middle * direction)):
                    low = middle
                else:
                    high = middle
            moved += low * direction
        return moved

    def _fits(self, plate: _Plate, polygons: np.ndarray) -> bool:
        import shapely

        x0, y0, x1, y1 = shapely.total_bounds(polygons)
        inside = (min(x0, y0) >= self.edge - _TOUCH_MM and x1 <= self.bed[0] - self.edge + _TOUCH_MM
                  and y1 <= self.bed[1] - self.edge + _TOUCH_MM)
        return inside and (not plate.shapes or shapely.distance(
            polygons[:, None], np.array(plate.shapes)[None, :]).min() >= self.gap - _TOUCH_MM)


def _raster(shape: Any, x0: float, y0: float, rows: int, cols: int) -> np.ndarray:
    """Which cells of a grid (corner x0, y0; ``CELL_MM`` cells) have their centre in the shape.

    A scanline fill: along each row's centre line, every crossing of a ring
    flips inside and outside for the cells after it.
    """
    import shapely

    rings = shapely.get_rings(shapely.get_parts(shape))
    starts, ends = [], []
    for ring in rings:
        coords = shapely.get_coordinates(ring)
        starts.append(coords[:-1])
        ends.append(coords[1:])
    a, b = np.vstack(starts), np.vstack(ends)
    ys = y0 + (np.arange(rows) + 0.5) * CELL_MM
    crossing = (a[None, :, 1] <= ys[:, None]) != (b[None, :, 1] <= ys[:, None])
    row, edge = np.nonzero(crossing)
    t = (ys[row] - a[edge, 1]) / (b[edge, 1] - a[edge, 1])
    x = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    first_after = np.clip(np.floor((x - x0) / CELL_MM - 0.5) + 1, 0, cols).astype(int)
    flips = np.bincount(row * (cols + 1) + first_after, minlength=rows * (cols + 1))
    return (np.cumsum(flips.reshape(rows, cols + 1), axis=1)[:, :cols] % 2).astype(bool)


def _area_on(plate: _Plate) -> float:
    return sum(p.part.area_mm2 for p in plate.placements)


def _shifted(polygons: np.ndarray, by: np.ndarray) -> np.ndarray:
    import shapely

    return shapely.transform(polygons, lambda xy: xy + by)


def _turned(outline: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The outline turned, shifted so its bounding box starts at 0; and that shift."""
    turned = outline @ _rotation(angle_deg).T
    shift = -turned.min(axis=0)
    return turned + shift, shift


def _long_axis_deg(points: np.ndarray) -> float:
    """Direction of the long side of the points' minimum-area rectangle."""
    import shapely

    corners = np.asarray(shapely.MultiPoint(points).minimum_rotated_rectangle.exterior.coords)
    sides = [corners[1] - corners[0], corners[2] - corners[1]]
    longer = max(sides, key=lambda v: float(np.hypot(*v)))
    return math.degrees(math.atan2(longer[1], longer[0]))


def _approach(fixed: Any, moving: Any, offset: np.ndarray, direction: np.ndarray,
              gap: float) -> float:
    """How far ``moving`` (at ``offset``) travels along ``direction`` until ``gap`` from ``fixed``.

    Each step moves by the current distance less the gap, which can never
    bring the two closer than the gap; it stops when the steps get tiny.
    """
    import shapely

    travelled = 0.0
    for _ in range(_APPROACH_STEPS):
        here = shapely.transform(moving, lambda xy, d=offset + travelled * direction: xy + d)
        step = shapely.distance(fixed, here) - gap
        if step < _APPROACH_DONE_MM:
            break
        travelled += step
    return travelled
