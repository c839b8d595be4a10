"""The insole: height fields over the foot's outline → one closed B-rep solid and its mesh.

:func:`build_insole` works in the canonical frame of :mod:`orthocad.frame`
(mirrored for a left foot, so +Y is medial for every foot) and mirrors the
finished solid back once, at the end: the returned :class:`Insole` is in the
output frame (heel at x = 0, toes toward +X, bottom at z = 0; medial is +Y
for a right insole and −Y for a left one).

Geometry, all fields on one regular grid (``GRID_MM``) over the outline:

* **Outline**: the plantar silhouette outline (:func:`orthocad.surface.plantar`)
  smoothed (a morphological closing then opening, ``_SMOOTH_MM``), offset by
  ``insole.margin_mm``, cut to the device length and rounded at the cut
  (``_END_RADIUS_MM``). Three-quarter: ``insole.three_quarter_behind_mm``
  behind the oblique line through MTH1 and MTH5 (from the measurements'
  landmarks when given, else 72 % and 64 % of the foot length); sulcus: that
  line moved 8 % of the foot length distally (≈ 80 %FL medially); full: not
  cut. The closed outline is made of ``_SEGMENTS`` open B-spline segments
  joined with matching tangents, never one periodic spline (OCC's volume of
  such a face is ~17 % off).
* **Top** = shell + scanned sole (gaps filled, Gaussian-smoothed
  ``_SOLE_SIGMA_MM``), plus, as smooth blended fields: the arch support
  raised toward ``arch_support_height_mm`` (a bump at ``arch_apex_pct`` on
  the medial side), medial and lateral flanges (a rise toward the outline
  over the midfoot), an optional metatarsal pad (a cos² dome); then the
  heel cup (the top is at least the heel seat + ``heel_cup_depth_mm`` × a
  wall profile rising toward the outline around the heel, a small flat rim
  rounded by the smoothing); then the Kirby skive (the medial heel seat
  raised along a plane inclined at the skive angle, its depth at the medial
  edge), the rearfoot post (a wedge raising the posted side by
  width × tan(angle) over the heel, blended to zero over the midfoot), the
  forefoot post (likewise under the forefoot) and the heel lift (under the
  heel, tapering over the midfoot, or full length). The top never drops
  below the shell thickness; a three-quarter or sulcus device thins over
  ``insole.feather_mm`` at its distal edge to ``FEATHER_EDGE_MM``.
  The foot stands on the device ``shell`` higher than on the shoe floor;
  the top-cover allowance does not change a filled device (the cover lifts
  the whole foot by its thickness).
* **Bottom**: flat, z = 0.

Solid: the top grid is interpolated by a bicubic B-spline surface
(``GeomAPI_PointsToBSplineSurface.Interpolate``, which passes through the
samples, never the approximating constructor, which oscillates) whose
parameters are x and y themselves; so the outline, as 2D curves, is
exactly the top face's boundary in parameter space. The solid is sewn from
that trimmed top face, the planar bottom face and the ruled side walls
between the outline at z = 0 and its image on the top (≈ 0.1 s; the
boolean of an outline prism with the half-space under the face gives the
same solid but takes 1.5–10 s on a 2–4 mm grid here).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad.enums import Side
from orthocad.errors import OrthocadError
from orthocad.prescribe import DeviceLength, LiftExtent

if TYPE_CHECKING:
    import trimesh

    from orthocad.frame import Foot
    from orthocad.measure import Measurements
    from orthocad.params import Params
    from orthocad.prescribe import Prescription
    from orthocad.surface import Plantar

GRID_MM = 2.0  #: spacing of the height grids and of the top surface's interpolation points
FEATHER_EDGE_MM = 1.0  #: thickness at a feathered distal edge
MTH1_PCT, MTH5_PCT = 0.72, 0.64  #: MTH1 and MTH5 x when not measured, as fractions of FL
SULCUS_AHEAD_PCT = 0.08  #: the sulcus line: the metatarsal line moved this much of FL distally

_SMOOTH_MM = 4.0  # outline smoothing radius (closing then opening): no toe gaps, no notches
_END_RADIUS_MM = 12.0  # the corners of a cut (three-quarter, sulcus) end are rounded this much
_SEGMENTS = 12  # open spline segments of the outline
_SOLE_SIGMA_MM = 2.5  # Gaussian smoothing of the scanned sole
_SPIKE_MM = 11.0  # sole grid: bumps narrower than this …
_SPIKE_RISE_MM = 2.0  # … and higher than this over their surroundings are removed
_TOP_SIGMA_MM = 1.5  # light smoothing of the shaped top (rounds the cup's rim and the max kinks)
_CUP_WALL_MM = 16.0  # the heel-cup wall rises over this band inside the outline …
_CUP_RIM_MM = 2.0  # … up to a flat rim this wide at the outline
_FLANGE_WALL_MM = 14.0  # flanges rise over this band inside the outline
_PAD_RADII_MM = (16.0, 12.0)  # metatarsal pad half-length (x) and half-width (y)
_CLAMP_MARGIN_MM = 0.1  # the top is clamped this far above the shell thickness
_MESH_ANGLE_RAD = 0.5  # angular deflection of the tessellation
_MARGIN_CELLS = 3  # grid cells beyond the outline on every side


class InsoleError(OrthocadError):
    """The insole's solid could not be built from these fields (a bug or a degenerate foot)."""


@dataclass(frozen=True, eq=False)
class HeightGrid:
    """Heights on a regular grid; sample ``[row, col]`` at (x0 + col·step, y0 + row·step)."""

    x0_mm: float
    y0_mm: float
    step_mm: float
    z_mm: np.ndarray  #: (ny, nx)

    @property
    def xs_mm(self) -> np.ndarray:
        return self.x0_mm + self.step_mm * np.arange(self.z_mm.shape[1])

    @property
    def ys_mm(self) -> np.ndarray:
        return self.y0_mm + self.step_mm * np.arange(self.z_mm.shape[0])

    def at(self, x_mm: Any, y_mm: Any) -> np.ndarray:
        """Bilinear height at (x, y); clamped to the grid's edge outside it."""
        from scipy.ndimage import map_coordinates

        x, y = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(y_mm, float))
        coords = np.stack([(y - self.y0_mm) / self.step_mm, (x - self.x0_mm) / self.step_mm])
        return map_coordinates(self.z_mm, coords.reshape(2, -1), order=1, mode="nearest"
                               ).reshape(x.shape)

    def mirrored(self) -> HeightGrid:
        """The grid with y → −y."""
        ny = self.z_mm.shape[0]
        return HeightGrid(self.x0_mm, -(self.y0_mm + (ny - 1) * self.step_mm), self.step_mm,
                          self.z_mm[::-1].copy())


@dataclass(frozen=True, eq=False)
class Insole:
    """One insole in the output frame (un-mirrored: a left insole is a true left insole)."""

    solid: Any  #: ``cadquery.Solid``: one valid closed solid
    mesh: trimesh.Trimesh  #: tessellation of ``solid`` at ``insole.stl_tolerance_mm`` (absolute)
    top: HeightGrid  #: the top surface's interpolation grid (output frame)
    bottom: HeightGrid  #: the bottom (flat: zeros)
    outline_mm: np.ndarray  #: (K, 2) closed device outline, counter-clockwise, output frame
    side: Side
    device_length: DeviceLength
    foot_length_mm: float
    volume_mm3: float  #: of the B-rep
    mesh_volume_mm3: float
    max_height_mm: float  #: highest point of the solid above z = 0
    #: thinnest vertical thickness of the top over the outline outside the feathered band
    min_thickness_mm: float
    shell_thickness_mm: float
    #: rearfoot post: how much the posted heel edge is raised, width·tan(angle); + medial
    rearfoot_post_lift_mm: float
    forefoot_post_lift_mm: float  #: likewise under the forefoot; + medial
    heel_lift_mm: float
    heel_cup_depth_mm: float  #: designed cup: rim above the heel seat
    mth_line_mm: tuple[tuple[float, float], tuple[float, float]]  #: MTH1, MTH5 (x, y), output
    build_seconds: float

    @property
    def mirrored(self) -> bool:
        return self.side is Side.LEFT


def build_insole(
    foot: Foot,
    prescription: Prescription,
    *,
    params: Params | None = None,
    plantar: Plantar | None = None,
    measurements: Measurements | None = None,
) -> Insole:
    """Build one foot's insole from its plantar surface and prescription (see the module doc).

    ``plantar`` is :func:`orthocad.surface.plantar` of ``foot`` (computed when
    not given); ``measurements`` supply the metatarsal heads' positions for a
    three-quarter or sulcus device (else fractions of the foot length).
    """
    from orthocad import params as params_module
    from orthocad import surface

    start = time.perf_counter()
    if prescription.side is not foot.side:
        from orthocad.errors import InputError

        raise InputError(f"the prescription is for the {prescription.side.value} foot, the scan "
                         f"is of the {foot.side.value} foot; prescribe for this foot")
    p = (params or params_module.defaults()).insole
    if plantar is None:
        plantar = surface.plantar(foot)
    length = float(foot.length_mm)
    mth1, mth5 = _mth_points(plantar, measurements, length)
    outline, cut = _device_outline(plantar, prescription.device_length, mth1, mth5, length, p)
    scanned_arch = None if measurements is None else measurements.medial_arch_height_mm
    fields = _top_field(plantar, prescription, outline, cut, length, p, scanned_arch)
    solid = _solid(fields.grid, outline)
    if foot.mirrored:
        solid = solid.mirror("XZ")
    if not (solid.isValid() and len(solid.Solids()) == 1):
        raise InsoleError("the insole solid is not one valid solid; report this scan")
    mesh = _mesh(solid, p.stl_tolerance_mm)
    grid = fields.grid
    flip = np.array([1.0, -1.0]) if foot.mirrored else np.ones(2)
    out_outline = outline * flip
    if foot.mirrored:
        out_outline = out_outline[::-1]  # mirroring turns counter-clockwise to clockwise
        grid = grid.mirrored()
    thickness = _min_thickness(mesh, out_outline, fields.feather_line, flip)
    return Insole(
        solid=solid, mesh=mesh, top=grid,
        bottom=HeightGrid(grid.x0_mm, grid.y0_mm, grid.step_mm, np.zeros_like(grid.z_mm)),
        outline_mm=out_outline, side=foot.side, device_length=prescription.device_length,
        foot_length_mm=length, volume_mm3=_volume(solid),
        mesh_volume_mm3=float(mesh.volume), max_height_mm=float(mesh.vertices[:, 2].max()),
        min_thickness_mm=thickness, shell_thickness_mm=prescription.shell_thickness_mm,
        rearfoot_post_lift_mm=fields.rearfoot_lift, forefoot_post_lift_mm=fields.forefoot_lift,
        heel_lift_mm=prescription.heel_lift_mm, heel_cup_depth_mm=fields.cup_depth,
        mth_line_mm=(tuple(map(float, mth1 * flip)), tuple(map(float, mth5 * flip))),
        build_seconds=time.perf_counter() - start,
    )


# --- outline ------------------------------------------------------------------------------


def _mth_points(plantar: Plantar, m: Measurements | None, length: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """MTH1 and MTH5 as (x, y): measured landmarks, else fractions of FL on the outline."""
    import shapely

    marks = m.landmarks_mm if m is not None else {}
    silhouette = shapely.Polygon(plantar.outline_mm).buffer(0)
    points = []
    for name, pct, medial in (("mth1", MTH1_PCT, True), ("mth5", MTH5_PCT, False)):
        if name in marks:
            points.append(np.array(marks[name][:2], dtype=float))
            continue
        x = pct * length
        lo, hi = _y_extent(silhouette, x)
        points.append(np.array([x, hi if medial else lo]))
    return points[0], points[1]


def _y_extent(polygon: Any, x: float) -> tuple[float, float]:
    import shapely

    _, y0, _, y1 = polygon.bounds
    cut = polygon.intersection(shapely.LineString([(x, y0 - 1), (x, y1 + 1)]))
    if cut.is_empty:
        return 0.0, 0.0
    b = cut.bounds
    return b[1], b[3]


def _device_outline(plantar: Plantar, length_kind: DeviceLength, mth1: np.ndarray,
                    mth5: np.ndarray, length: float, p: Any
                    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The device outline (closed, counter-clockwise) and its distal cut line (point, normal)."""
    import shapely

    polygon = shapely.Polygon(plantar.outline_mm).buffer(0)
    polygon = polygon.buffer(_SMOOTH_MM).buffer(-2 * _SMOOTH_MM).buffer(_SMOOTH_MM)
    polygon = _largest(polygon).buffer(p.margin_mm)
    cut = None
    if length_kind is not DeviceLength.FULL:
        along = mth1 - mth5
        normal = np.array([along[1], -along[0]]) / np.linalg.norm(along)  # ⊥ the line …
        if normal[0] < 0:
            normal = -normal  # … pointing distally
        if length_kind is DeviceLength.THREE_QUARTER:
            point = mth5 - p.three_quarter_behind_mm * normal
        else:
            point = mth5 + SULCUS_AHEAD_PCT * length * normal
        big = 4.0 * length
        tangent = np.array([-normal[1], normal[0]])
        keep = shapely.Polygon([point + big * tangent, point - big * tangent,
                                point - big * tangent - big * normal,
                                point + big * tangent - big * normal])
        polygon = _largest(polygon.intersection(keep))
        polygon = _largest(polygon.buffer(-_END_RADIUS_MM).buffer(_END_RADIUS_MM))
        cut = (point, normal)
    polygon = shapely.geometry.polygon.orient(polygon.simplify(0.05), 1.0)
    return np.asarray(polygon.exterior.coords), cut


def _largest(geometry: Any) -> Any:
    if geometry.geom_type == "MultiPolygon":
        geometry = max(geometry.geoms, key=lambda g: g.area)
    if geometry.is_empty or geometry.geom_type != "Polygon":
        raise InsoleError("the device outline vanished while cutting it to length; "
                          "check the foot's outline and the device length")
    return geometry


def _outline_segments(outline: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Split the closed outline into open segments: (points, start tangent, end tangent).

    The ring is resampled every ~3 mm of arc; tangents at the joints are the
    ring's central differences, shared by both neighbours, so the outline is
    tangent-continuous.
    """
    ring = outline[:-1] if np.allclose(outline[0], outline[-1]) else outline
    closed = np.vstack([ring, ring[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    total = arc[-1]
    n = max(_SEGMENTS * 4, int(round(total / 3.0)) // _SEGMENTS * _SEGMENTS)
    s = np.linspace(0.0, total, n, endpoint=False)
    pts = np.column_stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])])
    tangents = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    per = n // _SEGMENTS
    segments = []
    for k in range(_SEGMENTS):
        idx = np.arange(k * per, (k + 1) * per + 1) % n
        segments.append((pts[idx], tangents[idx[0]], tangents[idx[-1]]))
    return segments


# --- top surface ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fields:
    grid: HeightGrid  #: canonical (mirrored) frame
    rearfoot_lift: float
    forefoot_lift: float
    cup_depth: float
    feather_line: tuple[np.ndarray, np.ndarray] | None  #: (point, distal normal) of the band


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _window(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """0 before a, rising smoothly to 1 at b, 1 to c, falling to 0 at d."""
    up = np.ones_like(x) if b <= a else _smoothstep((x - a) / (b - a))
    down = np.ones_like(x) if d <= c else 1.0 - _smoothstep((x - c) / (d - c))
    return up * down


def _sole(plantar: Plantar, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The scanned sole on the grid: gaps filled from the nearest sample, smoothed."""
    from scipy import ndimage

    z = plantar.z_mm
    known = np.isfinite(z)
    if not known.any():
        raise InsoleError("the plantar grid holds no sole; check the scan holds the sole")
    index = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    filled = z[tuple(index)]
    # Despike: a patch of cells narrower than _SPIKE_MM standing out of the sole (a cell that
    # caught only dorsum points on a sparse scan) is no sole: a grey opening removes it.
    size = max(3, int(round(_SPIKE_MM / plantar.step_mm)) | 1)
    opened = ndimage.grey_opening(filled, size=(size, size), mode="nearest")
    filled = np.where(filled - opened > _SPIKE_RISE_MM, opened, filled)
    filled = ndimage.gaussian_filter(filled, _SOLE_SIGMA_MM / plantar.step_mm, mode="nearest")
    X, Y = np.meshgrid(xs, ys)
    step = plantar.step_mm
    coords = np.stack([(Y - plantar.y0_mm) / step, (X - plantar.x0_mm) / step])
    return ndimage.map_coordinates(filled, coords, order=1, mode="nearest")


def _edges_per_x(outline: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lateral (min y) and medial (max y) outline edges at each grid x (flat beyond the ends)."""
    ring = outline
    dense = []
    for a, b in zip(ring[:-1], ring[1:], strict=True):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.25)))
        t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
        dense.append(a + t * (b - a))
    pts = np.vstack(dense)
    step = xs[1] - xs[0]
    col = np.clip(np.round((pts[:, 0] - xs[0]) / step).astype(int), 0, len(xs) - 1)
    lo = np.full(len(xs), np.inf)
    hi = np.full(len(xs), -np.inf)
    np.minimum.at(lo, col, pts[:, 1])
    np.maximum.at(hi, col, pts[:, 1])
    ok = np.isfinite(lo)
    idx = np.arange(len(xs))
    lo = np.interp(idx, idx[ok], lo[ok])
    hi = np.interp(idx, idx[ok], hi[ok])
    return lo, hi


def _top_field(plantar: Plantar, rx: Prescription, outline: np.ndarray,
               cut: tuple[np.ndarray, np.ndarray] | None, length: float, p: Any,
               scanned_arch_mm: float | None = None) -> _Fields:
    import shapely
    from scipy import ndimage

    step = GRID_MM
    lo_xy = outline.min(axis=0) - _MARGIN_CELLS * step
    hi_xy = outline.max(axis=0) + _MARGIN_CELLS * step
    xs = lo_xy[0] + step * np.arange(int(np.ceil((hi_xy[0] - lo_xy[0]) / step)) + 1)
    ys = lo_xy[1] + step * np.arange(int(np.ceil((hi_xy[1] - lo_xy[1]) / step)) + 1)
    X, Y = np.meshgrid(xs, ys)
    polygon = shapely.Polygon(outline)
    inside = shapely.contains_xy(polygon, X, Y)
    # Distance inward from the outline (0 on it and outside).
    depth = np.where(inside, shapely.distance(polygon.exterior, shapely.points(X, Y)), 0.0)
    y_lat, y_med = _edges_per_x(outline, xs)
    y_lat, y_med = y_lat[None, :], y_med[None, :]
    mid = (y_lat + y_med) / 2
    half = np.maximum((y_med - y_lat) / 2, 1.0)
    across = (Y - mid) / half  # −1 lateral edge … +1 medial edge
    shell = rx.shell_thickness_mm
    fl = length

    sole = _sole(plantar, xs, ys)
    top = shell + sole

    # Arch support: raise the medial midfoot toward the target where the sole is lower.
    if rx.arch_support_height_mm is not None:
        apex = rx.arch_apex_pct / 100.0 * fl
        column = np.argmin(np.abs(xs - apex))
        if scanned_arch_mm is not None:  # what the prescription raised from
            scanned = scanned_arch_mm
        else:  # the sole's highest point in the medial third across the apex
            band = inside[:, column] & (across[:, column] >= 1.0 / 3.0)
            scanned = float(sole[band, column].max()) if band.any() else 0.0
        rise = max(0.0, rx.arch_support_height_mm - scanned)
        along = np.cos(np.clip((X - apex) / (0.18 * fl), -1.0, 1.0) * math.pi / 2) ** 2
        top += rise * along * _smoothstep((across + 0.2) / 1.0)

    # Flanges: the top rises toward the outline along the midfoot's medial / lateral side.
    wall = (1.0 - np.clip(depth / _FLANGE_WALL_MM, 0.0, 1.0)) ** 2
    if rx.medial_flange_mm > 0:
        along = _window(X, 0.22 * fl, 0.32 * fl, 0.55 * fl, 0.65 * fl)
        top += rx.medial_flange_mm * wall * along * _smoothstep((across - 0.2) / 0.5)
    if rx.lateral_flange_mm > 0:
        along = _window(X, 0.18 * fl, 0.28 * fl, 0.60 * fl, 0.70 * fl)
        top += rx.lateral_flange_mm * wall * along * _smoothstep((-across - 0.2) / 0.5)

    # Metatarsal pad: a cos² dome, its apex at met_pad_x_pct, under the 2nd–3rd metatarsals.
    if rx.met_pad_height_mm > 0 and rx.met_pad_x_pct is not None:
        px = rx.met_pad_x_pct / 100.0 * fl
        column = np.argmin(np.abs(xs - px))
        py = float(mid[0, column] + 0.1 * half[0, column])
        r = np.hypot((X - px) / _PAD_RADII_MM[0], (Y - py) / _PAD_RADII_MM[1])
        top += rx.met_pad_height_mm * np.cos(np.clip(r, 0.0, 1.0) * math.pi / 2) ** 2

    # Heel cup: at least the heel seat + depth × a wall rising toward the outline.
    heel = _window(X, -fl, -fl, 0.18 * fl, 0.32 * fl)
    seat_region = inside & (X < 0.2 * fl) & (depth > _CUP_WALL_MM)
    seat = shell + (float(sole[seat_region].min()) if seat_region.any() else 0.0)
    rising = np.clip((_CUP_WALL_MM - depth) / (_CUP_WALL_MM - _CUP_RIM_MM), 0.0, 1.0) ** 2
    cup = rx.heel_cup_depth_mm
    if cup > 0:
        top = np.maximum(top, seat + cup * rising * heel)
    top = ndimage.gaussian_filter(top, _TOP_SIGMA_MM / step, mode="nearest")
    # Never thinner than the shell (what follows only adds); the margin keeps the bicubic's
    # dip between samples next to a clamped region (≈ 0.05 mm) above the shell.
    top = np.maximum(top, shell + _CLAMP_MARGIN_MM)

    # Kirby skive: the medial heel raised along a plane at the skive angle, deepest medially.
    if rx.medial_skive_mm > 0:
        slope = math.tan(math.radians(max(rx.medial_skive_angle_deg, 1.0)))
        inner = y_med - _CUP_WALL_MM / 2  # the medial edge of the heel seat
        raise_ = np.clip(rx.medial_skive_mm - slope * (inner - Y), 0.0, rx.medial_skive_mm)
        top += raise_ * _window(X, -fl, -fl, 0.22 * fl, 0.32 * fl)

    # Rearfoot post: a wedge across the heel's width, blended to zero over the midfoot.
    heel_cols = (xs >= 0.10 * fl) & (xs <= 0.22 * fl)
    heel_lo = float(y_lat[0, heel_cols].min()) if heel_cols.any() else float(y_lat.min())
    heel_hi = float(y_med[0, heel_cols].max()) if heel_cols.any() else float(y_med.max())
    rearfoot_lift = 0.0
    if rx.rearfoot_post_deg != 0:
        width = heel_hi - heel_lo
        tan = math.tan(math.radians(abs(rx.rearfoot_post_deg)))
        if rx.rearfoot_post_deg > 0:
            wedge = tan * np.clip(Y - heel_lo, 0.0, width)
        else:
            wedge = tan * np.clip(heel_hi - Y, 0.0, width)
        top += wedge * _window(X, -fl, -fl, 0.30 * fl, 0.55 * fl)
        rearfoot_lift = math.copysign(width * tan, rx.rearfoot_post_deg)

    # Forefoot post: likewise under the forefoot, blended in over the distal midfoot.
    forefoot_lift = 0.0
    if rx.forefoot_post_deg != 0:
        cols = (xs >= 0.55 * fl) & (xs <= 0.80 * fl)
        ff_lo = float(y_lat[0, cols].min()) if cols.any() else float(y_lat.min())
        ff_hi = float(y_med[0, cols].max()) if cols.any() else float(y_med.max())
        width = ff_hi - ff_lo
        tan = math.tan(math.radians(abs(rx.forefoot_post_deg)))
        if rx.forefoot_post_deg > 0:
            wedge = tan * np.clip(Y - ff_lo, 0.0, width)
        else:
            wedge = tan * np.clip(ff_hi - Y, 0.0, width)
        top += wedge * _window(X, 0.48 * fl, 0.62 * fl, 2.0 * fl, 2.0 * fl)
        forefoot_lift = math.copysign(width * tan, rx.forefoot_post_deg)

    # Heel lift: under the heel tapering over the midfoot, or the full length.
    if rx.heel_lift_mm > 0:
        if rx.lift_extent is LiftExtent.FULL:
            top += rx.heel_lift_mm
        else:
            top += rx.heel_lift_mm * _window(X, -fl, -fl, 0.30 * fl, 0.60 * fl)


    # Feathered distal edge: the top thins to FEATHER_EDGE_MM over the band at the cut.
    feather_line = None
    if cut is not None and p.feather_mm > 0:
        point, normal = cut
        behind = -((X - point[0]) * normal[0] + (Y - point[1]) * normal[1])  # mm before the cut
        ramp = _smoothstep(behind / p.feather_mm)
        top = FEATHER_EDGE_MM + (top - FEATHER_EDGE_MM) * ramp
        feather_line = (point - p.feather_mm * normal, normal)

    if not np.all(np.isfinite(top)):
        raise InsoleError("the insole's top surface has non-finite heights; report this scan")
    return _Fields(grid=HeightGrid(float(xs[0]), float(ys[0]), step, top),
                   rearfoot_lift=rearfoot_lift, forefoot_lift=forefoot_lift,
                   cup_depth=float(cup), feather_line=feather_line)


# --- solid ----------------------------------------------------------------------------------


def _solid(grid: HeightGrid, outline: np.ndarray) -> Any:
    """Sew the trimmed B-spline top, the planar bottom and the ruled walls into one solid."""
    from orthocad._native import cadquery

    cq = cadquery()
    from OCP.Bnd import Bnd_Box
    from OCP.BRepBndLib import BRepBndLib
    from OCP.BRepBuilderAPI import (
        BRepBuilderAPI_MakeEdge,
        BRepBuilderAPI_MakeFace,
        BRepBuilderAPI_MakeSolid,
        BRepBuilderAPI_MakeWire,
        BRepBuilderAPI_Sewing,
    )
    from OCP.BRepLib import BRepLib
    from OCP.BRepOffsetAPI import BRepOffsetAPI_ThruSections
    from OCP.Geom2dAPI import Geom2dAPI_Interpolate
    from OCP.GeomAPI import GeomAPI, GeomAPI_PointsToBSplineSurface
    from OCP.gp import gp_Dir, gp_Pln, gp_Pnt, gp_Pnt2d, gp_Vec2d
    from OCP.TColgp import TColgp_HArray1OfPnt2d
    from OCP.TColStd import TColStd_Array2OfReal
    from OCP.TopAbs import TopAbs_SHELL
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopoDS import TopoDS

    z = grid.z_mm
    ny, nx = z.shape
    values = TColStd_Array2OfReal(1, nx, 1, ny)
    for i in range(nx):  # (i, j) ↔ (x, y)
        column = z[:, i]
        for j in range(ny):
            values.SetValue(i + 1, j + 1, float(column[j]))
    api = GeomAPI_PointsToBSplineSurface()
    api.Interpolate(values, grid.x0_mm, grid.step_mm, grid.y0_mm, grid.step_mm)
    if not api.IsDone():
        raise InsoleError("the top surface could not be interpolated; report this scan")
    surface = api.Surface()
    # Sanity: the surface passes through its samples (an approximating fit may oscillate).
    probe = surface.Value(grid.x0_mm + grid.step_mm * (nx // 2),
                          grid.y0_mm + grid.step_mm * (ny // 2))
    if abs(probe.Z() - z[ny // 2, nx // 2]) > 1e-3:
        raise InsoleError("the top surface misses its samples; report this scan")

    plane = gp_Pln(gp_Pnt(0.0, 0.0, 0.0), gp_Dir(0.0, 0.0, 1.0))
    top_wire, bottom_wire = BRepBuilderAPI_MakeWire(), BRepBuilderAPI_MakeWire()
    for points, start, end in _outline_segments(outline):
        array = TColgp_HArray1OfPnt2d(1, len(points))
        for k, (x, y) in enumerate(points):
            array.SetValue(k + 1, gp_Pnt2d(float(x), float(y)))
        fit = Geom2dAPI_Interpolate(array, False, 1e-9)
        # Unit tangents, unscaled: the parameter is chord length (scaling them makes loops).
        fit.Load(gp_Vec2d(*map(float, start)), gp_Vec2d(*map(float, end)), False)
        fit.Perform()
        curve = fit.Curve()
        edge = BRepBuilderAPI_MakeEdge(curve, surface).Edge()  # on the top: (u, v) = (x, y)
        BRepLib.BuildCurves3d_s(edge, 1e-6)
        top_wire.Add(edge)
        bottom_wire.Add(BRepBuilderAPI_MakeEdge(GeomAPI.To3d_s(curve, plane)).Edge())
    top_wire, bottom_wire = top_wire.Wire(), bottom_wire.Wire()
    top_face = BRepBuilderAPI_MakeFace(surface, top_wire, True).Face()
    bottom_face = BRepBuilderAPI_MakeFace(bottom_wire, True).Face()
    walls = BRepOffsetAPI_ThruSections(False, True, 1e-6)
    walls.AddWire(bottom_wire)
    walls.AddWire(top_wire)
    walls.Build()
    sewing = BRepBuilderAPI_Sewing(1e-4)
    for face in (bottom_face, top_face, walls.Shape()):
        sewing.Add(face)
    sewing.Perform()
    shells = TopExp_Explorer(sewing.SewedShape(), TopAbs_SHELL)
    if not shells.More():
        raise InsoleError("the insole's faces did not sew into a shell; report this scan")
    shell = TopoDS.Shell_s(shells.Current())
    shells.Next()
    if shells.More() or not shell.Closed():
        raise InsoleError("the insole's faces sewed into an open or split shell; report this scan")
    solid = BRepBuilderAPI_MakeSolid(shell).Solid()
    BRepLib.OrientClosedSolid_s(solid)
    box = Bnd_Box()
    BRepBndLib.Add_s(top_face, box, False)  # from the poles: fast, and bounds the surface
    low, high = box.CornerMin().Z(), box.CornerMax().Z()
    if low < float(z.min()) - 5.0 or high > float(z.max()) + 5.0:
        raise InsoleError(f"the top surface spans z {low:.2f}..{high:.2f} mm, off its samples' "
                          f"{float(z.min()):.2f}..{float(z.max()):.2f}; report this scan")
    return cq.Solid(solid)


def _mesh(solid: Any, tolerance_mm: float) -> trimesh.Trimesh:
    """The solid's triangles at an absolute chord tolerance (CadQuery's default is relative)."""
    import trimesh
    from OCP.BRepMesh import BRepMesh_IncrementalMesh

    # The chord tolerance bounds the error; a fine angular one (0.1 rad) only multiplies the
    # triangles on steep walls and costs seconds.
    BRepMesh_IncrementalMesh(solid.wrapped, tolerance_mm, False, _MESH_ANGLE_RAD, True)
    vertices, triangles = solid.tessellate(tolerance_mm, _MESH_ANGLE_RAD)
    return trimesh.Trimesh(np.array([v.toTuple() for v in vertices]), np.array(triangles),
                           process=True)


def _min_thickness(mesh: trimesh.Trimesh, outline: np.ndarray,
                   feather: tuple[np.ndarray, np.ndarray] | None, flip: np.ndarray) -> float:
    """Thinnest vertical thickness on the top: mesh vertices off the walls and the feather band."""
    import shapely

    v = mesh.vertices
    top = v[:, 2] > 1e-6
    polygon = shapely.Polygon(outline)
    off_wall = shapely.distance(polygon.exterior, shapely.points(v[:, 0], v[:, 1])) > 0.5
    keep = top & off_wall
    if feather is not None:
        point, normal = feather[0] * flip, feather[1] * flip
        keep &= (v[:, :2] - point) @ normal < 0
    return float(v[keep, 2].min()) if keep.any() else float("nan")


def _volume(solid: Any) -> float:
    """The B-rep's volume by adaptive integration.

    CadQuery's ``Volume()`` (fixed Gauss points) is ≈ 0.8 % off on the trimmed
    B-spline top; with a 1e-3 relative error bound it agrees with a 0.01 mm
    tessellation to 0.01 %.
    """
    from OCP.BRepGProp import BRepGProp
    from OCP.GProp import GProp_GProps

    props = GProp_GProps()
    BRepGProp.VolumeProperties_s(solid.wrapped, props, 1e-3, False, False)
    return float(props.Mass())
