"""Insole files and the checks a device passes before any file is called done.

Writers, picked by suffix (:data:`WRITERS`) behind one function,
:func:`write_insole`; every file is written under a temporary name in its
folder, then renamed (:func:`os.replace`), so a reader never sees half a file:

* ``.stl``: binary, the insole's mesh (tessellated from the B-rep at the
  absolute chord tolerance ``insole.stl_tolerance_mm``); the 80-byte header
  names orthocad, the case and the side.
* ``.step``: AP214, millimetres, the B-rep. OCCT stamps the header with the
  time and numbers its product per writer call; both are set here (a fixed
  time stamp, the product named after the file), so the file is
  byte-identical across runs too.
* ``.3mf``: millimetres, the mesh, with metadata (orthocad version, case id,
  side, parameter digest, scan SHA-256, frame, forced), written with lxml and
  zipfile: fixed zip time stamps, sorted entries, no time anywhere.

Same insole and same metadata give byte-identical files.

:func:`validate` measures the built device (issue 6, "Validation") and
returns a :class:`Validation`: one valid closed solid; the mesh watertight,
consistently wound, its volume within 1 % of the B-rep's; the STEP written
and re-imported as one valid solid of the same volume (0.1 %); thickness on
a 1 mm grid (vertical lines through the mesh give the top and the surface
under it; from each top point a line along the inward normal is marched to
that underside) at least the shell less 0.1 mm per region (heel, arch,
forefoot: < 30, 30-60, > 60 % of the foot length), off the feathered band
and the edge band, with the edge band's and the engraving's vertical
thickness checked on their own; every vertex inside the outline; the height
within ``insole.max_height_mm``; and the gap map, the top against the
scanned sole + shell, within what the prescription's modifications may add
(:func:`_check_gap`). :func:`export_insole` validates and writes the set,
refusing (:class:`~orthocad.errors.RejectedError`, exit 3) a device that
fails a check unless ``force``, which writes the files marked as forced.
:func:`previews` draws the device from the top, the medial side and the back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad import __version__
from orthocad.enums import OutputFrame
from orthocad.errors import InputError, OrthocadError, RejectedError

if TYPE_CHECKING:
    from orthocad.insole import HeightGrid, Insole
    from orthocad.measure import Measurements
    from orthocad.params import Params
    from orthocad.prescribe import Prescription
    from orthocad.surface import Plantar

#: Checks' limits from issue 6 ("Validation").
THICKNESS_SLACK_MM = 0.1  #: thickness may fall this far below the shell thickness
MESH_VOLUME_PCT = 1.0  #: mesh volume within this of the B-rep's
STEP_VOLUME_PCT = 0.1  #: the re-imported STEP's volume within this of the B-rep's
#: The outline is the polyline its splines interpolate; between its points a spline bulges
#: out by its sagitta (measured 0.04-0.06 mm).
OUTLINE_SLACK_MM = 0.25
#: The sole is smoothed (Gaussian, sigma 2.5 mm) before the top follows it: the top rises
#: over the sole's hollows (measured up to 1.7 mm on 30 random synthetic feet) ...
GAP_ABOVE_MM = 2.5
GAP_BELOW_MM = 2.0  #: ... and sinks under its bumps (measured up to 1.2 mm)

GRID_STEP_MM = 1.0  #: spacing of the dense grid thickness and gap are measured on
REGIONS = (("heel", 0.0, 0.30), ("arch", 0.30, 0.60), ("forefoot", 0.60, math.inf))  #: x / FL
_SOLE_INSET_MM = 6.0  # the gap map stays this far inside the scanned silhouette ...
_SOLE_MAX_SLOPE = 1.0  # ... where the sole is no steeper than 45 deg (steeper is the foot's side)
_DESPIKE_CELLS = 5  # median filter of the scanned sole: isolated cells of dorsum are no sole
_WALL_INSET_MM = 0.5  # grid points this close to the outline may miss the spline walls
_MARCH_MM = 0.1  # step along a normal when measuring thickness
_FEATHER_SLACK_MM = 0.5  # the feathered band is excluded this much wider
_ENGRAVING_SLACK_MM = 1.0  # and the engraved box (its letters' walls are tessellated)

_STEP_TIME = "1970-01-01T00:00:00"  # STEP needs a time stamp; a fixed one keeps files stable
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can carry
_NS_3MF = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
_NS_ORTHOCAD = "urn:orthocad:3mf:metadata"
_MODEL_REL = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
_MESH_MARK = "orthocad:mesh"  # stands for the mesh's elements until the text replaces it


# --- metadata ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """What every file records about where it came from (never a patient's name)."""

    case_id: str
    side: str
    params_sha256: str
    scan_sha256: str | None
    frame: OutputFrame = OutputFrame.CANONICAL
    forced: bool = False
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return {"orthocad_version": self.version, "case_id": self.case_id, "side": self.side,
                "params_sha256": self.params_sha256, "scan_sha256": self.scan_sha256,
                "frame": self.frame.value, "forced": self.forced}


def check_case_id(case_id: str) -> str:
    """A case id fit for file names, metadata and engraving (:data:`orthocad.insole.CASE_ID`)."""
    from orthocad.insole import CASE_ID

    if not CASE_ID.fullmatch(case_id) or case_id in (".", ".."):
        raise InputError(f"case id {case_id!r}: use 1-40 letters, digits, '.', '_' or '-' "
                         "(a case id, never a patient's name)")
    return case_id


def file_info(insole: Insole, *, case_id: str = "insole", params: Params | None = None,
              scan_sha256: str | None = None, frame: OutputFrame = OutputFrame.CANONICAL,
              forced: bool = False) -> FileInfo:
    """The metadata files of ``insole`` carry; the parameter digest of ``params`` (defaults)."""
    from orthocad import params as params_module

    return FileInfo(case_id=check_case_id(case_id), side=insole.side.value,
                    params_sha256=params_module.digest(params or params_module.defaults()),
                    scan_sha256=scan_sha256, frame=frame, forced=forced)


# --- writers ----------------------------------------------------------------------------------


def write_insole(
    insole: Insole,
    path: str | Path,
    *,
    case_id: str = "insole",
    params: Params | None = None,
    scan_sha256: str | None = None,
    transform: np.ndarray | None = None,
    frame: OutputFrame = OutputFrame.CANONICAL,
    forced: bool = False,
) -> Path:
    """Write ``insole`` to ``path`` in the format its suffix names (see :data:`WRITERS`).

    ``transform`` (4x4, rigid) moves the device out of the output frame before
    writing (``frame`` says which frame the file is then in, for its metadata).
    The file appears whole or not at all.
    """
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise InputError(f"{path.name}: unknown insole file type {path.suffix!r}; "
                         f"use {', '.join(WRITERS)}")
    info = file_info(insole, case_id=case_id, params=params, scan_sha256=scan_sha256,
                     frame=frame, forced=forced)
    with _atomic(path) as temporary:
        writer(insole, temporary, info, _rigid(transform))
    return path


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary name next to ``path``; renamed to ``path`` when the block succeeds."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~umask())  # mkstemp makes it private; files are not
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def umask() -> int:
    """The process's file-mode creation mask (reading it means setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rigid(transform: np.ndarray | None) -> np.ndarray | None:
    if transform is None:
        return None
    matrix = np.asarray(transform, dtype=np.float64)
    rotation = matrix[:3, :3]
    if (matrix.shape != (4, 4) or not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
            or np.linalg.det(rotation) < 0):
        raise InputError("the output transform is not a rotation and translation; "
                         "insole files are only moved, never scaled or mirrored")
    return matrix


def _mesh_arrays(insole: Insole, transform: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices, triangles, face normals) of the insole's mesh, moved by ``transform``."""
    mesh = insole.mesh
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    normals = np.asarray(mesh.face_normals, dtype=np.float64)
    if transform is not None:
        vertices = vertices @ transform[:3, :3].T + transform[:3, 3]
        normals = normals @ transform[:3, :3].T
    return vertices, np.asarray(mesh.faces, dtype=np.int64), normals


def _write_stl(insole: Insole, path: Path, info: FileInfo, transform: np.ndarray | None) -> None:
    vertices, faces, normals = _mesh_arrays(insole, transform)
    record = np.dtype([("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])
    data = np.zeros(len(faces), dtype=record)
    data["normal"] = normals
    data["vertices"] = vertices[faces]
    # Not "solid ...": readers take a header starting so for an ASCII STL.
    header = (f"orthocad {info.version} insole case {info.case_id} {info.side} "
              f"{info.frame.value} frame, mm").encode("ascii")[:80].ljust(80, b" ")
    with open(path, "wb") as out:
        out.write(header)
        out.write(np.uint32(len(faces)).tobytes())
        out.write(data.tobytes())


def _write_step(insole: Insole, path: Path, info: FileInfo, transform: np.ndarray | None
                ) -> None:
    from orthocad._native import cadquery

    cadquery()
    from OCP.APIHeaderSection import APIHeaderSection_MakeHeader
    from OCP.IFSelect import IFSelect_RetDone
    from OCP.StepBasic import StepBasic_Product
    from OCP.STEPControl import STEPControl_AsIs, STEPControl_Writer
    from OCP.TCollection import TCollection_HAsciiString

    from orthocad.insole import per_solid

    def translate() -> tuple[Any, list[Any]]:
        """The shape's STEP translation: the writer holding it, and its products."""
        writer = STEPControl_Writer()  # (creating it loads the STEP statics set next)
        _step_statics()
        if writer.Transfer(_moved_shape(insole.solid, transform),
                           STEPControl_AsIs) != IFSelect_RetDone:
            raise OrthocadError(f"{path.name}: the insole's B-rep could not be translated to "
                                "STEP; report this scan")
        model = writer.Model()
        return writer, [entity for entity in map(model.Value, range(1, model.NbEntities() + 1))
                        if isinstance(entity, StepBasic_Product)]

    # Validation writes the STEP to re-import it, then the file set writes it again: the
    # translation is kept; only the names and the header differ (written twice, a translation
    # gives the bytes of two fresh ones).
    writer, products = (translate() if transform is not None or insole.solid is None
                        else per_solid(insole.solid, "step", translate))
    _step_statics()
    model = writer.Model()
    name = f"{info.case_id}_{info.side}"
    for product in products:  # OCCT names it "... translator 7.9 <n>"
        product.SetName(TCollection_HAsciiString(name))
        product.SetId(TCollection_HAsciiString(name))
    header = APIHeaderSection_MakeHeader(model)
    header.SetName(TCollection_HAsciiString(name))
    header.SetTimeStamp(TCollection_HAsciiString(_STEP_TIME))
    header.SetAuthorValue(1, TCollection_HAsciiString(info.case_id))
    header.SetOrganizationValue(1, TCollection_HAsciiString("orthocad"))
    header.SetOriginatingSystem(TCollection_HAsciiString(f"orthocad {info.version}"))
    header.SetDescriptionValue(1, TCollection_HAsciiString(
        f"orthocad insole; side {info.side}; frame {info.frame.value}; params "
        f"{info.params_sha256}; scan {info.scan_sha256 or 'none'}; forced {_bool(info.forced)}"))
    if writer.Write(str(path)) != IFSelect_RetDone:
        raise OSError(f"{path}: the STEP file could not be written")


def _step_statics() -> None:
    from OCP.Interface import Interface_Static

    Interface_Static.SetCVal_s("write.step.schema", "AP214IS")
    Interface_Static.SetCVal_s("write.step.unit", "MM")
    # The file's uncertainty is the B-rep's greatest tolerance, not the average (OCCT's
    # default): a reader held to the average re-fits the top face's trimming curves (hundreds
    # of poles where the B-rep has 16), which makes every later volume integration 10x slower.
    Interface_Static.SetIVal_s("write.precision.mode", 1)


def _moved_shape(solid: Any, transform: np.ndarray | None) -> Any:
    """The solid's TopoDS shape, moved by ``transform``."""
    if transform is None:
        return solid.wrapped
    from OCP.BRepBuilderAPI import BRepBuilderAPI_Transform
    from OCP.gp import gp_Trsf

    trsf = gp_Trsf()
    trsf.SetValues(*(float(v) for v in transform[:3].ravel()))
    return BRepBuilderAPI_Transform(solid.wrapped, trsf, True).Shape()


def _write_3mf(insole: Insole, path: Path, info: FileInfo, transform: np.ndarray | None) -> None:
    from lxml import etree

    vertices, faces, _ = _mesh_arrays(insole, transform)
    model = etree.Element(f"{{{_NS_3MF}}}model", nsmap={None: _NS_3MF, "orthocad": _NS_ORTHOCAD})
    model.set("unit", "millimeter")
    model.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    name = f"{info.case_id}_{info.side}"
    for key, value in (("Title", name), ("Application", f"orthocad {info.version}"),
                       *((f"orthocad:{k.removeprefix('orthocad_')}", _text(v))
                         for k, v in info.to_dict().items())):
        etree.SubElement(model, f"{{{_NS_3MF}}}metadata", name=key).text = value
    resources = etree.SubElement(model, f"{{{_NS_3MF}}}resources")
    obj = etree.SubElement(resources, f"{{{_NS_3MF}}}object", id="1", type="model", name=name)
    etree.SubElement(obj, f"{{{_NS_3MF}}}mesh").text = _MESH_MARK
    mark = f"<mesh>{_MESH_MARK}</mesh>".encode()
    build = etree.SubElement(model, f"{{{_NS_3MF}}}build")
    etree.SubElement(build, f"{{{_NS_3MF}}}item", objectid="1")
    # The mesh as text: what lxml writes for its elements, ten times sooner than building them.
    mesh = "".join((
        "<mesh><vertices>",
        "".join(map('<vertex x="%s" y="%s" z="%s"/>'.__mod__,
                    map(tuple, np.char.mod("%.5f", vertices).tolist()))),
        "</vertices><triangles>",
        "".join(map('<triangle v1="%d" v2="%d" v3="%d"/>'.__mod__, map(tuple, faces.tolist()))),
        "</triangles></mesh>"))
    document = etree.tostring(model, xml_declaration=True, encoding="UTF-8")
    parts = {
        "3D/3dmodel.model": document.replace(mark, mesh.encode(), 1),
        "[Content_Types].xml": (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            b'<Default Extension="rels" '
            b'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            b'<Default Extension="model" '
            b'ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/></Types>'),
        "_rels/.rels": (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            b'<Relationship Target="/3D/3dmodel.model" Id="rel0" Type="' + _MODEL_REL.encode()
            + b'"/></Relationships>'),
    }
    with zipfile.ZipFile(path, "w") as archive:
        for entry in sorted(parts):
            member = zipfile.ZipInfo(entry, date_time=_ZIP_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            archive.writestr(member, parts[entry], compresslevel=6)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return _bool(value)
    return "" if value is None else str(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


#: suffix -> writer(insole, path, info, transform)
WRITERS: dict[str, Callable[[Insole, Path, FileInfo, np.ndarray | None], None]] = {
    ".stl": _write_stl,
    ".step": _write_step,
    ".3mf": _write_3mf,
}


# --- validation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One measured check: the value found, the limit it is held to, and what it means."""

    name: str
    passed: bool
    value: float | None  #: measured (None: nothing to measure, e.g. a region the device lacks)
    limit: float | None
    unit: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": _round(self.value),
                "limit": _round(self.limit), "unit": self.unit, "message": self.message}


@dataclass(frozen=True, eq=False)
class Validation:
    """The checks one insole went through (issue 6, "Validation")."""

    checks: tuple[Check, ...]
    #: checks not run, with the reason (e.g. the gap map without the plantar surface)
    skipped: dict[str, str] = field(default_factory=dict)
    forced: bool = False  #: failed, and written anyway (``force``)
    #: top − (scanned sole + shell) on the dense grid, output frame; NaN off the sole
    gap_map: HeightGrid | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(check for check in self.checks if not check.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "forced": self.forced,
                "failures": [check.name for check in self.failures],
                "checks": [check.to_dict() for check in self.checks],
                "skipped": dict(self.skipped)}

    def reasons(self) -> str:
        """The failures, one clause each, for a message."""
        return "; ".join(f"{c.name}: {c.message}" for c in self.failures)


def validate(
    insole: Insole,
    *,
    params: Params | None = None,
    plantar: Plantar | None = None,
    prescription: Prescription | None = None,
    measurements: Measurements | None = None,
) -> Validation:
    """Measure ``insole`` against issue 6's checks.

    ``params`` are those the insole was built with (defaults when None): the
    shoe-fit height limit and the feathered band come from them. The shell
    thickness is the prescription's (else the insole's). The gap map needs
    ``plantar`` (:func:`orthocad.surface.plantar` of the foot, canonical
    frame) and ``prescription``; without them it is skipped, and said so.
    ``measurements`` give the scanned arch height the arch support rises from
    (as they do to the build); without them it is read off the plantar grid.
    """
    from orthocad import params as params_module
    from orthocad.insole import brep_volume_mm3

    p = params or params_module.defaults()
    checks = [_check_solid(insole.solid), _check_watertight(insole.mesh)]
    brep_volume = brep_volume_mm3(insole.solid)
    checks.append(_check_mesh_volume(float(insole.mesh.volume), brep_volume))
    checks.append(_check_step(insole, brep_volume))
    shell = prescription.shell_thickness_mm if prescription else insole.shell_thickness_mm
    grid = _DenseGrid.of(insole, shell)
    checks += _check_thickness(grid, shell, insole)
    checks.append(_check_outline(insole))
    highest = insole.mesh.vertices[np.argmax(insole.mesh.vertices[:, 2])]
    height, limit = float(highest[2]), p.insole.max_height_mm
    checks.append(Check("max_height", height <= limit, height, limit, "mm",
                        f"stands {height:.1f} mm above the shoe floor at x {highest[0]:.0f}, "
                        f"y {highest[1]:.0f} mm (insole.max_height_mm = {limit:g} mm)"))
    skipped, gap_map = {}, None
    if plantar is None or prescription is None:
        skipped["sole_gap"] = "needs the plantar surface and the prescription"
    else:
        gap_checks, gap_map = _check_gap(grid, insole, plantar, prescription, measurements)
        checks += gap_checks
    return Validation(checks=tuple(checks), skipped=skipped, gap_map=gap_map)


def _check_solid(solid: Any) -> Check:
    from OCP.TopAbs import TopAbs_SHELL
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopoDS import TopoDS

    from orthocad.insole import is_valid_solid

    solids = solid.Solids()
    shells = []
    explorer = TopExp_Explorer(solid.wrapped, TopAbs_SHELL)
    while explorer.More():
        shells.append(TopoDS.Shell_s(explorer.Current()))
        explorer.Next()
    closed = len(shells) == 1 and shells[0].Closed()
    valid = is_valid_solid(solid)
    passed = len(solids) == 1 and closed and valid
    message = (f"{len(solids)} solid(s), {len(shells)} shell(s), "
               f"{'closed' if closed else 'not one closed shell'}, "
               f"{'valid' if valid else 'invalid (BRepCheck)'}")
    return Check("single_solid", passed, float(len(solids)), 1.0, "solids", message)


def _check_watertight(mesh: Any) -> Check:
    _, counts = np.unique(np.sort(mesh.edges, axis=1), axis=0, return_counts=True)
    open_edges = int((counts != 2).sum())
    winding = bool(mesh.is_winding_consistent)
    outward = float(mesh.volume) > 0
    passed = open_edges == 0 and winding and outward and bool(mesh.is_watertight)
    message = (f"{open_edges} edge(s) not shared by exactly two triangles; winding "
               f"{'consistent' if winding else 'inconsistent'}, "
               f"{'outward' if outward else 'inward'}")
    return Check("mesh_watertight", passed, float(open_edges), 0.0, "edges", message)


def _check_mesh_volume(mesh_volume: float, brep_volume: float) -> Check:
    off = _pct(mesh_volume, brep_volume)
    return Check("mesh_volume", off <= MESH_VOLUME_PCT, off, MESH_VOLUME_PCT, "%",
                 f"mesh {mesh_volume / 1000:.2f} cm3 vs B-rep {brep_volume / 1000:.2f} cm3")


def _check_step(insole: Insole, brep_volume: float) -> Check:
    from orthocad._native import cadquery

    cq = cadquery()
    with tempfile.TemporaryDirectory(prefix="orthocad-step-") as folder:
        path = Path(folder) / "insole.step"
        _write_step(insole, path, FileInfo("check", insole.side.value, "", None), None)
        try:
            shapes = cq.importers.importStep(str(path)).vals()
        except Exception as bad:  # OCCT raises plain exceptions on unreadable files
            return Check("step_reimport", False, None, STEP_VOLUME_PCT, "%",
                         f"the written STEP does not re-import: {bad}")
    solids = [solid for shape in shapes for solid in shape.Solids()]
    if len(solids) != 1 or not solids[0].isValid():
        return Check("step_reimport", False, None, STEP_VOLUME_PCT, "%",
                     f"re-imports as {len(solids)} solid(s)"
                     f"{'' if len(solids) != 1 else ', invalid'}, not one valid solid")
    volume = _brep_volume(solids[0].wrapped)
    off = _pct(volume, brep_volume)
    return Check("step_reimport", off <= STEP_VOLUME_PCT, off, STEP_VOLUME_PCT, "%",
                 f"re-imports as one valid solid of {volume / 1000:.3f} cm3 "
                 f"(B-rep {brep_volume / 1000:.3f} cm3)")


def _brep_volume(shape: Any) -> float:
    """Volume by adaptive integration (CadQuery's fixed Gauss points are ~0.8 % off here)."""
    from OCP.BRepGProp import BRepGProp
    from OCP.GProp import GProp_GProps

    props = GProp_GProps()
    BRepGProp.VolumeProperties_s(shape, props, 1e-3, False, False)
    return float(props.Mass())


def _pct(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference) * 100.0 if reference else math.inf


def _check_outline(insole: Insole) -> Check:
    import shapely

    polygon = shapely.Polygon(insole.outline_mm)
    v = insole.mesh.vertices
    outside = ~shapely.contains_xy(polygon, v[:, 0], v[:, 1])
    worst = float(shapely.distance(polygon, shapely.points(v[outside, :2])).max()
                  ) if outside.any() else 0.0
    return Check("inside_outline", worst <= OUTLINE_SLACK_MM, worst, OUTLINE_SLACK_MM, "mm",
                 f"reaches {worst:.2f} mm outside its outline")


@dataclass(frozen=True, eq=False)
class _DenseGrid:
    """The mesh's top and the surface under it, on vertical lines through a dense grid."""

    x_mm: np.ndarray  #: (n,) grid points inside the outline
    y_mm: np.ndarray
    top_mm: np.ndarray  #: highest upward-facing surface
    under_mm: np.ndarray  #: the next surface below it (the floor of a filled device)
    #: thickness along the top's inward normal, to the underside (see :meth:`of`)
    thickness_mm: np.ndarray
    measured: np.ndarray  #: outside the feathered band (where the shell thickness holds)
    engraved: np.ndarray  #: over the engraving (the shell less the engraving's depth holds)
    edge: np.ndarray  #: within the insole's edge band of the outline
    shape: tuple[int, int]  #: (ny, nx) of the full grid
    origin_mm: tuple[float, float]
    index: np.ndarray  #: flat index of each point in the full grid

    @classmethod
    def of(cls, insole: Insole, shell_mm: float) -> _DenseGrid:
        """Sample the mesh; march from each top point along its inward normal to the underside.

        The underside is the surface under the top on the same grid (the floor
        of a filled device, a shell's inner surface), continued past the
        outline and under the engraved box by its nearest value: the
        thickness is that of the material between the top and the underside,
        not where the line leaves through a side wall (the edge band) or an
        engraved letter (checked on its own). Marched in steps of a tenth of
        a millimetre, up to three shell thicknesses (thicker is reported as that).
        """
        import shapely
        from scipy import ndimage

        mesh = insole.mesh
        lo, hi = mesh.bounds[0][:2], mesh.bounds[1][:2]
        step = GRID_STEP_MM
        x0, y0 = np.floor(lo / step) * step
        nx, ny = (np.floor((hi - (x0, y0)) / step) + 1).astype(int)
        cell, z, face = _vertical_hits(np.asarray(mesh.triangles), x0, y0, step, nx, ny)
        normals = np.asarray(mesh.face_normals)
        size = nx * ny
        up = normals[face, 2] > 1e-6
        top = np.full(size, -np.inf)
        np.maximum.at(top, cell[up], z[up])
        below = z < top[cell] - 1e-6
        under = np.full(size, -np.inf)
        np.maximum.at(under, cell[below], z[below])
        top_normal = np.zeros((size, 3))
        at_top = up & (z >= top[cell] - 1e-9)
        top_normal[cell[at_top]] = normals[face[at_top]]
        X, Y = np.meshgrid(x0 + step * np.arange(nx), y0 + step * np.arange(ny))
        X, Y = X.ravel(), Y.ravel()
        outline = shapely.Polygon(insole.outline_mm)
        keep = shapely.contains_xy(outline.buffer(-_WALL_INSET_MM), X, Y) & np.isfinite(
            top) & np.isfinite(under)
        engraved = _in_engraving(insole, X, Y)
        index = np.flatnonzero(keep)
        # The underside the normals march to: the letters and the outside filled by the nearest.
        known = (keep & ~engraved).reshape(ny, nx)
        nearest = ndimage.distance_transform_edt(~known, return_distances=False,
                                                 return_indices=True)
        underside = np.where(known, under.reshape(ny, nx), 0.0)[tuple(nearest)]
        x, y = X[index], Y[index]
        thickness = _march(x, y, top[index], top_normal[index], underside, (x0, y0),
                           3.0 * shell_mm)
        edge = shapely.distance(outline.exterior, shapely.points(x, y)) < insole.edge_band_mm
        return cls(x_mm=x, y_mm=y, top_mm=top[index], under_mm=under[index],
                   thickness_mm=thickness, measured=~_in_feather_band(insole, x, y),
                   engraved=engraved[index], edge=edge, shape=(int(ny), int(nx)),
                   origin_mm=(float(x0), float(y0)), index=index)

    def full(self, values: np.ndarray) -> HeightGrid:
        """``values`` (one per point) on the full grid, NaN elsewhere."""
        from orthocad.insole import HeightGrid

        z = np.full(self.shape[0] * self.shape[1], np.nan)
        z[self.index] = values
        return HeightGrid(self.origin_mm[0], self.origin_mm[1], GRID_STEP_MM,
                          z.reshape(self.shape))


def _march(x: np.ndarray, y: np.ndarray, z: np.ndarray, normal: np.ndarray,
           underside: np.ndarray, origin: tuple[float, float], reach_mm: float) -> np.ndarray:
    """Distance from (x, y, z) along −normal to where the line meets the underside grid."""
    from scipy.ndimage import map_coordinates

    steps = np.arange(1, int(np.ceil(reach_mm / _MARCH_MM)) + 1) * _MARCH_MM
    thickness = np.full(len(x), float(steps[-1]))
    previous = z - map_coordinates(underside, [(y - origin[1]) / GRID_STEP_MM,
                                              (x - origin[0]) / GRID_STEP_MM],
                                   order=1, mode="nearest")
    started = previous > 0  # a top point on or under the underside has no thickness
    open_ = started.copy()
    for s in steps:
        px, py, pz = x - s * normal[:, 0], y - s * normal[:, 1], z - s * normal[:, 2]
        above = pz - map_coordinates(underside, [(py - origin[1]) / GRID_STEP_MM,
                                                 (px - origin[0]) / GRID_STEP_MM],
                                     order=1, mode="nearest")
        crossed = open_ & (above <= 0)
        # where between the last two steps: linear in the height above the underside
        thickness[crossed] = s - _MARCH_MM * above[crossed] / (above[crossed] - previous[crossed])
        open_ &= ~crossed
        if not open_.any():
            break
        previous = above
    return np.where(started, thickness, 0.0)


def _vertical_hits(tri: np.ndarray, x0: float, y0: float, step: float, nx: int, ny: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every crossing of a triangle (F, 3, 3) with a vertical grid line: (flat cell, z, face)."""
    lo, hi = tri[:, :, :2].min(axis=1), tri[:, :, :2].max(axis=1)
    i0 = np.clip(np.ceil((lo[:, 0] - x0) / step), 0, nx).astype(np.int64)
    i1 = np.clip(np.floor((hi[:, 0] - x0) / step), -1, nx - 1).astype(np.int64)
    j0 = np.clip(np.ceil((lo[:, 1] - y0) / step), 0, ny).astype(np.int64)
    j1 = np.clip(np.floor((hi[:, 1] - y0) / step), -1, ny - 1).astype(np.int64)
    width, height = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    count = width * height
    face = np.repeat(np.arange(len(tri)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    w = np.maximum(width[face], 1)
    i, j = i0[face] + k % w, j0[face] + k // w
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    px, py = x0 + i * step - a[:, 0], y0 + j * step - a[:, 1]
    e1, e2 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
    den = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    flat = np.abs(den) <= 1e-12  # vertical triangles (walls) have no area seen from above
    den = np.where(flat, 1.0, den)
    s = (px * e2[:, 1] - e2[:, 0] * py) / den
    t = (e1[:, 0] * py - px * e1[:, 1]) / den
    hit = ~flat & (s >= -1e-9) & (t >= -1e-9) & (s + t <= 1 + 1e-9)
    z = a[:, 2] + s * (b[:, 2] - a[:, 2]) + t * (c[:, 2] - a[:, 2])
    return (j * nx + i)[hit], z[hit], face[hit]


def _in_feather_band(insole: Insole, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points in the band where a three-quarter or sulcus device thins to its feathered edge."""
    if insole.feather_line_mm is None:
        return np.zeros(x.shape, dtype=bool)
    (px, py), (nx, ny) = insole.feather_line_mm  # the band's inner edge; normal toward the toes
    return (x - px) * nx + (y - py) * ny > -_FEATHER_SLACK_MM


def _in_engraving(insole: Insole, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points over the engraved box (its letters are cut into the underside)."""
    import shapely

    if insole.engraving is None:
        return np.zeros(x.shape, dtype=bool)
    box = shapely.Polygon(insole.engraving.box_mm).buffer(_ENGRAVING_SLACK_MM)
    return shapely.contains_xy(box, x, y)


def _check_thickness(grid: _DenseGrid, shell_mm: float, insole: Insole) -> list[Check]:
    """The thinnest point per region along the normal, off the feathered and the edge band;
    the edge band's and the engraved box's vertical thickness on their own."""
    limit = shell_mm - THICKNESS_SLACK_MM
    vertical = grid.top_mm - grid.under_mm
    x_fl = grid.x_mm / insole.foot_length_mm
    inner = grid.measured & ~grid.engraved & ~grid.edge
    rows = [(f"min_thickness_{name}", inner & (x_fl >= lo) & (x_fl < hi), grid.thickness_mm,
             limit, f"along the normal, {insole.edge_band_mm:g} mm or more inside the outline")
            for name, lo, hi in REGIONS]
    rows.append(("min_thickness_edge", grid.measured & ~grid.engraved & grid.edge, vertical,
                 limit, f"vertical, within {insole.edge_band_mm:g} mm of the outline"))
    if insole.engraving is not None:
        rows.append(("min_thickness_engraved", grid.measured & grid.engraved, vertical,
                     limit - insole.engraving.depth_mm,
                     f"vertical, over the engraving {insole.engraving.depth_mm:g} mm deep"))
    checks = []
    for name, inside, thickness, least, how in rows:
        if not inside.any():
            checks.append(Check(name, True, None, least, "mm",
                                "no such part outside the feathered edge"))
            continue
        k = np.argmin(np.where(inside, thickness, np.inf))
        value = float(thickness[k])
        checks.append(Check(
            name, value >= least, value, least, "mm",
            f"thinnest {value:.2f} mm {how} (shell {shell_mm:g} mm), at x {grid.x_mm[k]:.0f}, "
            f"y {grid.y_mm[k]:.0f} mm of {int(inside.sum())} points"))
    return checks


def _check_gap(grid: _DenseGrid, insole: Insole, plantar: Plantar, rx: Prescription,
               measurements: Measurements | None) -> tuple[list[Check], HeightGrid]:
    """The top against the scanned sole + shell: within the prescription's modifications.

    The gap is top − (sole + shell) on the dense grid, over the scanned sole
    (inside the silhouette, sole no steeper than 45 degrees; off the
    feathered edge). Each modification the prescription asks for may raise
    the top by its size over the zone it acts in (its x extent, as issue 6
    places it); the top cover may lower it by its thickness. Beyond that the
    top follows the sole within the smoothing's tolerance.
    """
    import shapely

    flip = -1.0 if insole.mirrored else 1.0  # the plantar grid is in the canonical frame
    sole, slope = _despiked_sole(plantar)
    x, y = grid.x_mm, grid.y_mm * flip
    on_sole = grid.measured & shapely.contains_xy(
        shapely.Polygon(plantar.outline_mm).buffer(-_SOLE_INSET_MM), x, y)
    sole_z = _sample(sole, plantar, x, y)
    on_sole &= np.isfinite(sole_z) & (_sample(slope, plantar, x, y) <= _SOLE_MAX_SLOPE)
    gap = grid.top_mm - (sole_z + rx.shell_thickness_mm)
    gap_map = grid.full(np.where(on_sole, gap, np.nan))
    scanned_arch = measurements.medial_arch_height_mm if measurements is not None else None
    if scanned_arch is None:
        scanned_arch = _scanned_arch(sole, plantar, rx)
    rise, drop = _modification_budget(rx, plantar, grid.x_mm / insole.foot_length_mm,
                                      scanned_arch)
    checks = []
    if not on_sole.any():
        nowhere = Check("sole_gap_above", False, None, GAP_ABOVE_MM, "mm",
                        "no point of the top lies over the scanned sole: wrong foot or frame?")
        return [nowhere], gap_map
    for name, excess, limit, what in (
        ("sole_gap_above", gap - rise, GAP_ABOVE_MM, "rises above sole + shell + modifications"),
        ("sole_gap_below", drop - gap, GAP_BELOW_MM, "sinks below sole + shell − top cover"),
    ):
        k = np.argmax(np.where(on_sole, excess, -np.inf))
        value = float(excess[k])
        checks.append(Check(
            name, value <= limit, value, limit, "mm",
            f"the top {what} by at most {value:+.2f} mm (at x {grid.x_mm[k]:.0f}, "
            f"y {grid.y_mm[k]:.0f} mm: gap {gap[k]:+.2f}, prescribed {drop[k]:+.2f}.."
            f"{rise[k]:+.2f} mm)"))
    return checks, gap_map


def _despiked_sole(plantar: Plantar) -> tuple[np.ndarray, np.ndarray]:
    """The scanned sole without isolated spikes (NaN off the foot), and its slope."""
    from scipy import ndimage

    z = plantar.z_mm
    known = np.isfinite(z)
    index = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    filled = ndimage.median_filter(z[tuple(index)], size=_DESPIKE_CELLS, mode="nearest")
    gy, gx = np.gradient(filled, plantar.step_mm)
    return np.where(known, filled, np.nan), np.hypot(gx, gy)


def _sample(values: np.ndarray, plantar: Plantar, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest-cell value of a grid shaped like the plantar grid; NaN off it."""
    ny, nx = values.shape
    col = np.round((x - plantar.x0_mm) / plantar.step_mm).astype(np.int64)
    row = np.round((y - plantar.y0_mm) / plantar.step_mm).astype(np.int64)
    ok = (col >= 0) & (col < nx) & (row >= 0) & (row < ny)
    out = np.full(x.shape, np.nan)
    out[ok] = values[row[ok], col[ok]]
    return out


def _modification_budget(rx: Prescription, plantar: Plantar, x_fl: np.ndarray,
                         scanned_arch_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """How far each point's top may rise above, and sink below, the sole + shell.

    Each modification counts at its full size wherever it may act (x as a
    fraction of the foot length): heel cup and skive around the heel (≤ 0.35);
    rearfoot post and heel lift under the heel, blended out over the midfoot
    (≤ 0.60; a full-length lift everywhere); arch support and flanges along the
    midfoot (0.15-0.75); forefoot post under the forefoot (≥ 0.45); the
    metatarsal pad around its apex (± 0.12). The arch support raises the
    medial arch toward its height from the scanned arch's height.
    """
    from orthocad.prescribe import LiftExtent

    def zone(lo: float, hi: float) -> np.ndarray:
        return ((x_fl >= lo) & (x_fl <= hi)).astype(float)

    rise = rx.heel_cup_depth_mm * zone(-1, 0.35) + rx.medial_skive_mm * zone(-1, 0.35)
    rise += abs(_edge_lift(rx.rearfoot_post_deg, plantar, 0.10, 0.22)) * zone(-1, 0.60)
    if rx.lift_extent is LiftExtent.FULL:
        rise += rx.heel_lift_mm
    else:
        rise += rx.heel_lift_mm * zone(-1, 0.60)
    midfoot = zone(0.15, 0.75)
    if rx.arch_support_height_mm is not None:
        rise += max(0.0, rx.arch_support_height_mm - scanned_arch_mm) * midfoot
    rise += (rx.medial_flange_mm + rx.lateral_flange_mm) * midfoot
    rise += abs(_edge_lift(rx.forefoot_post_deg, plantar, 0.55, 0.80)) * zone(0.45, math.inf)
    if rx.met_pad_x_pct is not None:
        pad = rx.met_pad_x_pct / 100.0
        rise += rx.met_pad_height_mm * zone(pad - 0.12, pad + 0.12)
    drop = np.full(x_fl.shape, -rx.top_cover_mm)
    if rx.first_ray_cutout:  # the first ray's region may be cut away down to the shell
        drop[x_fl >= 0.55] = -math.inf
    return rise, drop


def _edge_lift(angle_deg: float, plantar: Plantar, lo: float, hi: float) -> float:
    """width·tan(angle) of a post over the silhouette's width between lo and hi × FL (+ margin)."""
    if angle_deg == 0:
        return 0.0
    outline = plantar.outline_mm
    length = float(outline[:, 0].max() - outline[:, 0].min())
    x0 = float(outline[:, 0].min())
    band = (outline[:, 0] >= x0 + lo * length) & (outline[:, 0] <= x0 + hi * length)
    width = float(np.ptp(outline[band, 1])) if band.any() else float(np.ptp(outline[:, 1]))
    width += 2 * 10.0  # the device's margin and smoothing may widen it; a bound, not a design
    return width * math.tan(math.radians(abs(angle_deg)))


def _scanned_arch(sole: np.ndarray, plantar: Plantar, rx: Prescription) -> float:
    """The scanned sole's highest point across the arch apex, in the medial third (canonical).

    Higher than the measured medial arch height where the silhouette takes in
    the foot's side: a smaller allowance for the arch support, so it errs strict.
    """
    length = float(plantar.outline_mm[:, 0].max() - plantar.outline_mm[:, 0].min())
    x = float(plantar.outline_mm[:, 0].min()) + rx.arch_apex_pct / 100.0 * length
    col = int(round((x - plantar.x0_mm) / plantar.step_mm))
    column = sole[:, np.clip(col, 0, sole.shape[1] - 1)]
    rows = np.flatnonzero(np.isfinite(column))
    if not len(rows):
        return 0.0
    ys = plantar.y0_mm + plantar.step_mm * rows
    medial = ys >= ys.min() + 2.0 / 3.0 * (ys.max() - ys.min())
    return float(np.max(column[rows[medial]]))


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


# --- the file set -----------------------------------------------------------------------------


FORMATS = (".stl", ".step", ".3mf")  #: what :func:`export_insole` writes


@dataclass(frozen=True, eq=False)
class Exported:
    """One insole's files and the validation they passed (or were forced past)."""

    validation: Validation
    paths: tuple[Path, ...]  #: the model files, then the validation JSON


def export_insole(
    insole: Insole,
    out_dir: str | Path,
    *,
    stem: str,
    params: Params | None = None,
    plantar: Plantar | None = None,
    prescription: Prescription | None = None,
    measurements: Measurements | None = None,
    case_id: str = "insole",
    scan_sha256: str | None = None,
    transform: np.ndarray | None = None,
    frame: OutputFrame = OutputFrame.CANONICAL,
    force: bool = False,
    validation: Validation | None = None,
) -> Exported:
    """Validate ``insole`` and write ``out_dir/<stem>.{stl,step,3mf}`` and the validation JSON.

    A failed check raises :class:`RejectedError` and writes nothing, unless
    ``force``: then the files are written and marked (``forced``). The files
    appear together or not at all. ``validation`` skips re-validating.
    """
    if validation is None:
        validation = validate(insole, params=params, plantar=plantar, prescription=prescription,
                              measurements=measurements)
    if not validation.passed and not force:
        raise RejectedError(rejection(stem, validation))
    validation = replace(validation, forced=not validation.passed)
    with staged(out_dir) as staging:
        write_set(insole, staging, stem=stem, validation=validation, params=params,
                  case_id=case_id, scan_sha256=scan_sha256, transform=transform, frame=frame)
    names = [f"{stem}{suffix}" for suffix in FORMATS] + [f"{stem}_validation.json"]
    return Exported(validation=validation, paths=tuple(Path(out_dir) / n for n in names))


def rejection(name: str, validation: Validation) -> str:
    """The one-line message refusing a device that failed validation."""
    return (f"{name}: the insole fails validation: {validation.reasons()} "
            "(nothing written; pass --force to write it anyway, marked)")


def write_set(
    insole: Insole,
    folder: Path,
    *,
    stem: str,
    validation: Validation,
    params: Params | None = None,
    case_id: str = "insole",
    scan_sha256: str | None = None,
    transform: np.ndarray | None = None,
    frame: OutputFrame = OutputFrame.CANONICAL,
) -> list[Path]:
    """Write the model files and ``<stem>_validation.json`` into ``folder`` (no checks)."""
    info = file_info(insole, case_id=case_id, params=params, scan_sha256=scan_sha256,
                     frame=frame, forced=validation.forced)
    paths = []
    for suffix in FORMATS:
        paths.append(write_insole(insole, folder / f"{stem}{suffix}", case_id=case_id,
                                  params=params, scan_sha256=scan_sha256, transform=transform,
                                  frame=frame, forced=validation.forced))
    report = {**info.to_dict(), **validation.to_dict()}
    paths.append(write_json(folder / f"{stem}_validation.json", report))
    return paths


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with _atomic(Path(path)) as temporary:
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def staged(out_dir: str | Path) -> Iterator[Path]:
    """A staging folder inside ``out_dir``; its files move into ``out_dir`` when the block ends.

    If the block raises, the staging folder and everything in it are removed
    and ``out_dir`` keeps what it had.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".orthocad-"))
    try:
        yield staging
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- previews ---------------------------------------------------------------------------------


#: view -> (the direction the viewer looks along, picture up), for a right insole in the output
#: frame; a left insole's medial side is −y, so it is seen from there.
_VIEWS = {
    "top": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "medial": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "back": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}
_PIXEL_MM = 0.4  # preview resolution


def previews(insole: Insole, out_dir: str | Path, *, stem: str) -> dict[str, Path]:
    """PNG pictures of the device from the top, the medial side and the back (:func:`render`).

    Written atomically as ``out_dir/<stem>_<view>.png``; returns view -> path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for view in _VIEWS:
        image, extent = render(insole, view)
        figure = Figure(figsize=(6.4, 3.2), dpi=110)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.imshow(image, origin="lower", interpolation="nearest", extent=extent)
        axes.set_title(f"{insole.side.value} insole, {view} view (mm)", fontsize=9)
        axes.tick_params(labelsize=7)
        path = out / f"{stem}_{view}.png"
        with _atomic(path) as temporary:
            figure.savefig(temporary, format="png", metadata={"Software": None})
        paths[view] = path
    return paths


def render(insole: Insole, view: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """An orthographic picture of the mesh: RGBA rows (bottom first) and its extent in mm.

    ``view`` is ``top``, ``medial`` or ``back``. A depth buffer on a
    ``_PIXEL_MM`` grid (so walls and top hide each other correctly); colour
    by height, shaded by a light over the viewer's shoulder; transparent
    where the device is not. Extent: (left, right, bottom, top) along the
    picture's axes (the top view: x and y of the output frame).
    """
    from matplotlib import colormaps

    look, up = (np.array(axis) for axis in _VIEWS[view])
    if view == "medial" and insole.mirrored:
        look = -look
    right = np.cross(look, up)
    camera = np.stack([right, up, -look])  # picture x, picture y, toward the viewer
    vertices = np.asarray(insole.mesh.vertices)
    faces = np.asarray(insole.mesh.faces)
    normals = np.asarray(insole.mesh.face_normals)
    moved = vertices @ camera.T
    lo, hi = moved[:, :2].min(axis=0) - 2.0, moved[:, :2].max(axis=0) + 2.0
    nx, ny = (np.ceil((hi - lo) / _PIXEL_MM) + 1).astype(int)
    facing = np.flatnonzero(normals @ look < 0)
    cell, depth, face = _vertical_hits(moved[faces[facing]], lo[0], lo[1], _PIXEL_MM, nx, ny)
    nearest = np.full(nx * ny, -np.inf)
    np.maximum.at(nearest, cell, depth)
    seen = depth >= nearest[cell]
    cell, face = cell[seen], facing[face[seen]]
    height = np.zeros(nx * ny)
    points = np.c_[lo[0] + _PIXEL_MM * (cell % nx), lo[1] + _PIXEL_MM * (cell // nx),
                   nearest[cell]]
    height[cell] = (points @ camera)[:, 2]
    light = -look + 0.5 * up + 0.3 * right
    shade = np.zeros(nx * ny)
    shade[cell] = 0.45 + 0.55 * np.clip(normals[face] @ (light / np.linalg.norm(light)), 0, 1)
    top = float(vertices[:, 2].max()) or 1.0
    rgba = np.asarray(colormaps["viridis"](0.15 + 0.8 * height / top))
    rgba[:, :3] *= shade[:, None]
    rgba[:, 3] = np.isfinite(nearest)
    half = _PIXEL_MM / 2  # samples are the pixels' centres
    extent = (float(lo[0] - half), float(lo[0] + (nx - 0.5) * _PIXEL_MM), float(lo[1] - half),
              float(lo[1] + (ny - 0.5) * _PIXEL_MM))
    return rgba.reshape(ny, nx, 4), extent
