"""The canonical foot frame: support plane, long axis, origin, side and mirror.

Implements ``docs/frame.md``. :func:`canonical` takes a cleaned
:class:`~orthocad.scan.Scan` (millimetres, the scanner's own coordinates) and
returns a :class:`Foot` whose points have

* z = 0 on the support plane and +Z up into the foot,
* +X along the long axis of the silhouette, toward the toes, x = 0 at the
  pternion,
* +Y medial, y = 0 on the long axis through the silhouette's centroid.

Left feet are mirrored (y → −y) so that +Y is medial for every foot; the
:class:`Foot` keeps the transform (det −1 for a left foot) and maps points
back to the scan or to the un-mirrored output frame insole files are written in.
Where the support plane is the floor found while cleaning, the floor's
points cleaning left around the foot are dropped (they would lengthen it).

The frame depends only on the shape, never on how the scan arrived: every
step below is defined by the geometry (hull facets, silhouette raster, local
surface fits), so a rigid motion of the input moves nothing in the result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orthocad.enums import ScanKind, Side
from orthocad.errors import NotAFootError
from orthocad.scan import Scan

SILHOUETTE_TOP_MM = 40.0  #: the silhouette is made of the points up to this height (frame.md)
RASTER_MM = 1.0  #: silhouette raster cell (frame.md)
CONTACT_MM = 2.0  #: a point this close to a candidate support plane touches it (frame.md)

_VOXEL_MM = 2.0  # voxel of the uniform, outlier-free summary cloud the plane is searched on
_SUPPORT_CONE_DEG = 40.0  # support normals considered around the forefoot's thin axis
_SIDE_BAND_MM = 10.0  # which face is the sole: the one with more area this close to its plane
_NEIGHBOURS = 16  # points in a local tangent-plane fit (denoising)


@dataclass(frozen=True, eq=False)
class Foot:
    """A foot in the canonical frame (mm), mirrored for a left foot so +Y is medial."""

    #: (N, 3) canonical points: the scan's, minus floor left around the foot by cleaning
    points_mm: np.ndarray
    normals: np.ndarray | None  #: (N, 3) unit normals in the canonical frame, or None
    faces: np.ndarray | None  #: (M, 3) triangles, wound so normals stay outward, or None
    side: Side  #: LEFT or RIGHT
    side_detected: bool  #: True when the side came from the geometry, False when given
    side_evidence: dict[str, float]  #: each side cue's vote (+1 right … −1 left) and their sum
    scan_kind: ScanKind
    to_canonical: np.ndarray  #: (4, 4) scan mm → canonical; det −1 for a left foot
    #: RMS distance from the support plane of the points within 2 mm of it (the floor's own
    #: residual when it came from the floor): noise, plus how a rounded sole rises near contact
    support_residual_mm: float
    support_from_floor: bool  #: True when the plane is the floor found while cleaning
    scan: Scan = field(repr=False)  #: the scan this foot was framed from (not modified)

    @property
    def from_canonical(self) -> np.ndarray:
        """(4, 4) canonical → scan mm coordinates."""
        return np.linalg.inv(self.to_canonical)

    @functools.cached_property
    def length_mm(self) -> float:
        """Pternion to the tip of the longest toe along +X, on the denoised surface."""
        x_axis = np.array([1.0, 0.0, 0.0])
        return extreme_mm(self.points_mm, x_axis) + extreme_mm(self.points_mm, -x_axis)

    @property
    def mirrored(self) -> bool:
        """True for a left foot: its canonical points are mirrored (y → −y) from the scan."""
        return self.side is Side.LEFT

    @property
    def source(self) -> Path | None:
        return self.scan.source

    @property
    def sha256(self) -> str | None:
        return self.scan.sha256

    def to_scan(self, points_mm: np.ndarray) -> np.ndarray:
        """Map canonical points back to the scan's own coordinates (mm)."""
        return _apply(self.from_canonical, points_mm)

    def to_output(self, points_mm: np.ndarray) -> np.ndarray:
        """Map canonical points to the output frame: the canonical frame un-mirrored.

        Heel at x = 0, toes +X, bottom z = 0; medial is +Y for a right foot
        and −Y for a left foot, so a left insole written in this frame is a
        true left insole. Triangles mapped this way need their winding
        reversed when :attr:`mirrored`.
        """
        points = np.array(points_mm, dtype=np.float64, copy=True)
        if self.mirrored:
            points[..., 1] *= -1.0
        return points


def canonical(scan: Scan, *, side: Side = Side.AUTO) -> Foot:
    """Move a cleaned scan into the canonical foot frame (see the module docstring).

    ``side`` overrides the detected side. Raises :class:`NotAFootError` when
    the points cannot be framed as a foot.
    """
    points = np.asarray(scan.points_mm, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < 500:
        raise NotAFootError(
            f"the scan has {len(points)} points, too few to frame a foot: "
            "scan the whole foot, or check that cleaning did not remove it"
        )
    normals = None if scan.normals is None else np.asarray(scan.normals, np.float64)
    faces = None if scan.faces is None else np.asarray(scan.faces)
    if scan.support_plane is not None:
        up, offset, residual = _floor(scan, points)
        keep = ~_floor_remnants(points, up, offset)
        points, normals, faces = _subset(keep, points, normals, faces)
    else:
        up, offset, residual = _support_plane(points)
    rotation, origin, length, over = _axes(points, up, offset)
    right_handed = (points - origin) @ rotation.T
    evidence = side_cues(right_handed[over], length_mm=length)
    detected = Side.RIGHT if evidence["total"] >= 0.0 else Side.LEFT
    chosen = detected if side is Side.AUTO else side
    mirror = np.diag([1.0, -1.0, 1.0]) if chosen is Side.LEFT else np.eye(3)
    linear = mirror @ rotation
    transform = np.eye(4)
    transform[:3, :3] = linear
    transform[:3, 3] = -linear @ origin
    canon = right_handed * np.diag(mirror)
    normals = None if normals is None else normals @ linear.T
    if faces is not None and chosen is Side.LEFT:
        # A mirror turns windings inside out: reversing them keeps the normals outward.
        faces = np.ascontiguousarray(faces[:, ::-1])
    return Foot(
        points_mm=canon,
        normals=normals,
        faces=faces,
        side=chosen,
        side_detected=side is Side.AUTO,
        side_evidence=evidence,
        scan_kind=scan_kind(right_handed[over], length_mm=length),
        to_canonical=transform,
        support_residual_mm=residual,
        support_from_floor=scan.support_plane is not None,
        scan=scan,
    )


# --- support plane ---------------------------------------------------------------------------


def _floor(scan: Scan, points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The floor found while cleaning, oriented so the foot is on its +normal side."""
    plane = scan.support_plane
    normal = np.asarray(plane.normal, dtype=np.float64)
    normal = normal / np.linalg.norm(normal)
    offset = float(plane.offset_mm)
    if np.median(points @ normal - offset) < 0.0:
        normal, offset = -normal, -offset
    return normal, offset, float(plane.residual_mm)


def _floor_remnants(points: np.ndarray, up: np.ndarray, offset: float) -> np.ndarray:
    """Points of the floor that cleaning left around the foot.

    Cleaning keeps the floor's points under the foot (they may be the
    sole's contact) with a margin of a few millimetres, which would
    lengthen and widen the foot. The foot's walls rise from its contact
    edge, so its contact lies under the silhouette of its points above the
    floor band: a point in the band (1.5 mm) outside that silhouette is
    floor. The silhouette is rasterised at 0.5 mm here, so that it reaches
    at most about 0.5 mm beyond the foot.
    """
    e1, e2 = _plane_basis(up)
    z = points @ up - offset
    uv = np.column_stack([points @ e1, points @ e2])
    above = z > 1.5
    upper = silhouette(uv[above], z[above], step_mm=0.5)
    if upper is None:
        return np.zeros(len(points), dtype=bool)
    return (z <= 1.5) & ~upper.contains(uv)


def _subset(
    keep: np.ndarray, points: np.ndarray, normals: np.ndarray | None, faces: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The kept points, their normals, and the faces among them renumbered."""
    if faces is not None:
        number = np.cumsum(keep) - 1
        faces = number[faces[keep[faces].all(axis=1)]]
    return points[keep], None if normals is None else normals[keep], faces


def _support_plane(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The plane the foot stands on, when no floor was captured.

    Searched on a summary cloud: voxel means at 2 mm (uniform density, so
    counts are areas), without stray points (fewer than four others within
    4 mm) and without points off the surface around them (more than
    1 mm, or four times the typical distance, from the plane of their
    neighbours), so outliers cannot become hull vertices. Then:

    1. The support normal is near the forefoot's thin axis (the ball is wider
       than it is tall, while the hindfoot, ankle and leg are not): this
       rules out the side faces, which can be as flat as the sole.
    2. Of the two faces along that axis, the sole is the one with more
       projected area within 10 mm of its hull plane (a dorsum is rounded, a
       plantar scan's trim rim is a curve).
    3. On the sole side, the hull facet with the largest projected contact
       area within 2 mm (frame.md); but where the foot would rest stably on
       another facet (its centroid projects inside it) that touches at least
       half as much, that one: a rounded, unloaded sole can roll onto its
       lateral border for a little more contact, and the plane it rests on
       is the one meant.
    4. Noise puts the hull on the noise's lowest extremes: the plane is
       refitted to the denoised contact points (:func:`_refine_plane`).
    """
    from scipy.spatial import ConvexHull, QhullError

    summary = _voxel_means(points, _VOXEL_MM)
    if len(summary) < 50:
        raise NotAFootError("the scan has too few points to be a foot scan: scan the whole foot")
    fit = _tangent_fit(summary, summary, 10)
    off_surface = np.linalg.norm(summary - fit.projected, axis=1)
    surface = (fit.distances[:, 4] <= 2 * _VOXEL_MM) & (  # itself and four others within 4 mm
        off_surface <= max(1.0, 4.0 * float(np.median(off_surface)))
    )
    if surface.sum() < 50:
        raise NotAFootError(
            "the scan's points do not form a surface (too few of them lie together): "
            "check the file is a foot scan"
        )
    summary, summary_normals = summary[surface], fit.normals[surface]
    thin = _thin_axis(summary)
    try:
        hull = ConvexHull(summary)
    except QhullError as error:
        raise NotAFootError(
            "the scan is flat or degenerate, so no support plane can be found: scan the whole foot"
        ) from error
    normals = -hull.equations[:, :3]  # into the foot
    offsets = hull.equations[:, 3]  # normal · p = offset on the facet, ≥ offset inside
    cone = np.flatnonzero(np.abs(normals @ thin) >= np.cos(np.radians(_SUPPORT_CONE_DEG)))
    if len(cone) == 0:
        raise NotAFootError(
            "no face of the scan can be a sole (nothing flat under the forefoot): "
            "check the file is a foot scan"
        )
    # Area near a plane = summary points near it, each weighted by how squarely it faces the
    # plane (projected area), so a trim rim's vertical walls or a steep side count for little.
    # Scores are sums over the surface: a regular quarter of a smooth surface's summary points
    # scores the same, and a smooth scan's hull has thousands of small facets.
    every = max(1, len(summary) // 4000)
    heights = summary[::every] @ normals[cone].T - offsets[cone]  # (M, K)
    facing = np.abs(summary_normals[::every] @ normals[cone].T)
    side_area = ((heights <= _SIDE_BAND_MM) * facing).sum(axis=0)
    up_sign = np.sign(normals[cone] @ thin)
    on_sole = up_sign == up_sign[np.argmax(side_area)]
    sole = cone[on_sole]
    contact = ((heights[:, on_sole] <= CONTACT_MM) * facing[:, on_sole]).sum(axis=0)
    best = np.argmax(contact)
    stable = np.isin(sole, _stable_facets(hull, summary.mean(axis=0), sole))
    resting = stable & (contact >= 0.5 * contact[best])
    if resting.any():
        best = np.flatnonzero(resting)[np.argmax(contact[resting])]
    contact_area_mm2 = contact[best] * every * _VOXEL_MM**2
    if contact_area_mm2 < 100.0:
        raise NotAFootError(
            f"the scan touches its best support plane over only {contact_area_mm2:.0f} mm²: "
            "it has no sole to stand on; check the file is a foot scan"
        )
    return _refine_plane(points, normals[sole[best]], float(offsets[sole[best]]))


def _stable_facets(hull, centroid: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Of the candidate hull facets, those that contain the centroid's projection."""
    normal = hull.equations[candidates, :3]
    corners = hull.points[hull.simplices[candidates]]  # (K, 3, 3)
    distance = normal @ centroid + hull.equations[candidates, 3]
    foot = centroid - distance[:, None] * normal
    signs = np.stack(
        [
            np.einsum(
                "ki,ki->k",
                np.cross(corners[:, (i + 1) % 3] - corners[:, i], foot - corners[:, i]),
                normal,
            )
            for i in range(3)
        ],
        axis=1,
    )
    inside = (signs >= 0).all(axis=1) | (signs <= 0).all(axis=1)
    return candidates[inside]


def _refine_plane(
    points: np.ndarray, up: np.ndarray, offset: float
) -> tuple[np.ndarray, float, float]:
    """Refit the support plane to the denoised points near it.

    The hull plane lies on the noise's lowest extremes, a few tenths of a
    millimetre below the surface, and its tilt carries that noise (and any
    stray point that made it into the hull). The points from 3 mm below to
    8 mm above it are projected onto their local tangent planes (which cuts
    their noise about threefold, to σ, and moves a stray point onto the
    surface around it). Then, five times:

    * tilt: the least-squares plane of the points within a symmetric band
      of 3 σ (at least 0.75 mm) around the plane;
    * offset: a flat, weight-bearing contact piles its heights into a peak
      (more of them in the lowest millimetre than in the next): the plane
      goes through the band's mean, which converges on the peak. A rounded,
      unloaded sole's heights only rise from its contact points: the plane
      goes to their 1st percentile plus 2.33 σ, staying tangent.
    """
    height = points @ up - offset
    # What lies further below is stray points, whose projections would be arbitrary.
    low = points[(height >= -3.0) & (height <= 8.0)]
    if len(low) < 20:
        return up, offset, 0.0
    sample = low[:: max(1, len(low) // 5000)]  # a fit needs thousands, not all
    fit = _tangent_fit(sample, low, _NEIGHBOURS)
    projected, noise = fit.projected, fit.noise_mm()
    band = max(0.75, 3.0 * noise)
    h = projected @ up - offset
    start = float(np.percentile(h[h <= 3.0], 1.0))
    first = np.count_nonzero((h >= start) & (h < start + 1.0))
    second = np.count_nonzero((h >= start + 1.0) & (h < start + 2.0))
    flat = first > 2 * second
    offset += start + (0.0 if flat else 2.33 * noise)
    for _ in range(5):
        h = projected @ up - offset
        near = projected[np.abs(h) <= band]
        if len(near) < 10:
            break
        centre = near.mean(axis=0)
        normal = np.linalg.eigh((near - centre).T @ (near - centre))[1][:, 0]
        up = normal if normal @ up > 0 else -normal
        if flat:
            offset = float(centre @ up)
        else:
            h = projected @ up - offset
            offset += float(np.percentile(h[np.abs(h) <= 3.0], 1.0)) + 2.33 * noise
    raw = sample @ up - offset
    residual = float(np.sqrt(np.mean(raw[np.abs(raw) <= 2.0] ** 2)))
    return up, offset, residual


# --- long axis, toes, origin -----------------------------------------------------------------


def _axes(
    points: np.ndarray, up: np.ndarray, offset: float
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Rotation (rows X, Y, Z), origin and silhouette length, per frame.md steps 2–3.

    Also returns which points are over the foot (within 10 mm of its
    silhouette seen from above, not below the plane): the pternion, the side
    and the scan kind are judged on those, so stray points cannot sway them.
    """
    e1, e2 = _plane_basis(up)
    z = points @ up - offset
    uv = np.column_stack([points @ e1, points @ e2])
    raster = silhouette(uv, z)
    if raster is None:
        raise NotAFootError(
            "no part of the scan lies within 40 mm of its support plane: "
            "the scan has no sole; check the file is a foot scan"
        )
    cells = raster.cell_centres_mm()
    centroid = cells.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov((cells - centroid).T))
    if eigval[1] < 2.0 * eigval[0]:
        ratio = np.sqrt(eigval[1] / max(eigval[0], 1e-9))
        raise NotAFootError(
            f"the scan's outline is not elongated (length/width {ratio:.2f}): "
            "a foot is 2–3 times longer than wide; check the file is a single foot"
        )
    axis = eigvec[:, 1]
    along = (cells - centroid) @ axis
    lo, hi = along.min(), along.max()
    length = hi - lo
    if not 80.0 <= length <= 450.0:
        raise NotAFootError(
            f"the scan's outline is {length:.0f} mm long, no foot is: check the units (--units)"
        )
    across = (cells - centroid) @ np.array([-axis[1], axis[0]])
    back, front = along <= lo + length / 4, along >= hi - length / 4
    if np.ptp(across[back]) > np.ptp(across[front]):  # the forefoot end is the wider one
        axis = -axis
    x_dir = axis[0] * e1 + axis[1] * e2
    y_dir = np.cross(up, x_dir)
    rotation = np.stack([x_dir, y_dir, up])
    # Origin: the silhouette centroid, moved back to the pternion and down to the plane.
    origin_2d = centroid[0] * e1 + centroid[1] * e2
    origin = origin_2d + up * (offset - origin_2d @ up)
    # x = 0 at the most posterior point of all of the foot, as foot_length_mm (max x − min x)
    # counts it: a leg leaning back can reach behind the heel above the silhouette's 40 mm.
    over = raster.contains(uv, margin_mm=10.0) & (z >= -5.0)
    pternion = -extreme_mm(points[over] - origin, -x_dir)
    origin = origin + pternion * x_dir
    return rotation, origin, float(length), over


@dataclass(frozen=True)
class Silhouette:
    """A filled raster of the foot's lower part seen from above (frame.md step 2: 1 mm)."""

    mask: np.ndarray  #: (nv, nu) bool, [row = v, column = u]
    u0_mm: float  #: u of the left edge of column 0
    v0_mm: float  #: v of the bottom edge of row 0
    step_mm: float

    def cell_centres_mm(self) -> np.ndarray:
        rows, cols = np.nonzero(self.mask)
        return np.column_stack(
            [self.u0_mm + (cols + 0.5) * self.step_mm, self.v0_mm + (rows + 0.5) * self.step_mm]
        )

    def contains(self, uv: np.ndarray, *, margin_mm: float = 0.0) -> np.ndarray:
        """Whether each (u, v) falls in a silhouette cell (grown by ``margin_mm``)."""
        from scipy import ndimage

        grow = int(np.ceil(margin_mm / self.step_mm))
        pad = grow + 1
        mask = np.pad(self.mask, pad)
        if grow:
            mask = ndimage.binary_dilation(mask, iterations=grow)
        col = np.floor((uv[:, 0] - self.u0_mm) / self.step_mm).astype(np.int64) + pad
        row = np.floor((uv[:, 1] - self.v0_mm) / self.step_mm).astype(np.int64) + pad
        ok = (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
        inside = np.zeros(len(uv), dtype=bool)
        inside[ok] = mask[row[ok], col[ok]]
        return inside


def silhouette(
    uv_mm: np.ndarray,
    z_mm: np.ndarray,
    *,
    step_mm: float = RASTER_MM,
    top_mm: float = SILHOUETTE_TOP_MM,
) -> Silhouette | None:
    """Rasterise the points with 0 ≤ z ≤ top (a little noise below 0 allowed) seen from above.

    Cells holding a point are occupied; the raster is closed (a scan's point
    spacing leaves gaps), its holes filled, and only its largest connected
    part kept, so stray points off the foot do not count. None when no point
    is in the height range.
    """
    from scipy import ndimage

    keep = (z_mm >= -5.0) & (z_mm <= top_mm)
    if keep.sum() < 3:
        return None
    uv = uv_mm[keep]
    pad = 3
    u0 = np.floor(uv[:, 0].min() / step_mm) * step_mm - pad * step_mm
    v0 = np.floor(uv[:, 1].min() / step_mm) * step_mm - pad * step_mm
    col = np.floor((uv[:, 0] - u0) / step_mm).astype(np.int64)
    row = np.floor((uv[:, 1] - v0) / step_mm).astype(np.int64)
    mask = np.zeros((row.max() + pad + 1, col.max() + pad + 1), dtype=bool)
    mask[row, col] = True
    disk = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_closing(mask, structure=disk, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == np.argmax(sizes)
    return Silhouette(mask=mask, u0_mm=float(u0), v0_mm=float(v0), step_mm=step_mm)


# --- side and scan kind ------------------------------------------------------------------------


def side_cues(points_mm: np.ndarray, *, length_mm: float) -> dict[str, float]:
    """Vote on the side from a foot in the right-handed frame (+Y = the foot's left).

    For a right foot +Y is medial. Each cue returns a vote in [−1, 1]
    (positive = right foot); ``total`` is their sum:

    * ``arch``: the plantar surface over the midfoot (35–65 %FL) is higher on
      the medial side (the arch vault; the lateral band carries the load);
    * ``toes``: the toes' front edge reaches further on the medial side
      (the hallux and second toe are the longest, the lesser toes recede);
    * ``ball``: the medial outline's apex (MTH1) lies further forward than
      the lateral outline's apex (MTH5): the metatarsal line is oblique.
    """
    grid = _LowerEnvelope(points_mm, step_mm=2.0)
    mid_line = grid.centre_line()
    votes = {
        "arch": _arch_cue(grid, mid_line, length_mm),
        "toes": _toe_cue(grid, mid_line, length_mm),
        "ball": _ball_cue(grid, length_mm),
    }
    votes["total"] = float(sum(votes.values()))
    return votes


class _LowerEnvelope:
    """Lowest z and occupancy of the points on a coarse x, y grid (x from the pternion)."""

    def __init__(self, points_mm: np.ndarray, *, step_mm: float):
        x, y, z = points_mm.T
        self.step = step_mm
        self.x0, self.y0 = x.min(), y.min()
        col = ((x - self.x0) / step_mm).astype(np.int64)
        row = ((y - self.y0) / step_mm).astype(np.int64)
        shape = (row.max() + 1, col.max() + 1)
        flat = row * shape[1] + col
        low = np.full(shape[0] * shape[1], np.inf)
        np.minimum.at(low, flat, z)
        self.low = low.reshape(shape)
        self.occupied = np.isfinite(self.low)
        self.xs = self.x0 + (np.arange(shape[1]) + 0.5) * step_mm
        self.ys = self.y0 + (np.arange(shape[0]) + 0.5) * step_mm

    def centre_line(self) -> np.ndarray:
        """Per column, the middle of the occupied y range (NaN for an empty column)."""
        rows = np.arange(self.occupied.shape[0])[:, None]
        top = np.where(self.occupied, rows, -1).max(axis=0)
        bottom = np.where(self.occupied, rows, self.occupied.shape[0]).min(axis=0)
        centre = self.y0 + ((top + bottom) / 2 + 0.5) * self.step
        return np.where(top >= 0, centre, np.nan)


def _arch_cue(grid: _LowerEnvelope, mid_line: np.ndarray, length: float) -> float:
    cols = (grid.xs >= 0.35 * length) & (grid.xs <= 0.65 * length)
    low = grid.low[:, cols]
    offset = grid.ys[:, None] - mid_line[cols][None, :]
    usable = np.isfinite(low) & (low <= 40.0)
    medial = usable & (offset > 0)
    lateral = usable & (offset < 0)
    if medial.sum() < 5 or lateral.sum() < 5:
        return 0.0
    difference = low[medial].mean() - low[lateral].mean()
    return float(np.tanh(difference / 3.0))


def _toe_cue(grid: _LowerEnvelope, mid_line: np.ndarray, length: float) -> float:
    ball = (grid.xs >= 0.55 * length) & (grid.xs <= 0.80 * length)
    centre = np.nanmedian(mid_line[ball]) if np.isfinite(mid_line[ball]).any() else np.nan
    if not np.isfinite(centre):
        return 0.0
    cols = np.arange(grid.occupied.shape[1])
    front = np.where(grid.occupied, cols[None, :], -1).max(axis=1)  # per row
    rows_ok = front >= 0
    half_width = np.nanmax(np.abs(grid.ys[rows_ok] - centre))
    offset = (grid.ys - centre) / half_width
    front_x = grid.xs[np.clip(front, 0, None)]
    medial = rows_ok & (offset > 0.1) & (offset < 0.6)
    lateral = rows_ok & (offset < -0.1) & (offset > -0.6)
    if not medial.any() or not lateral.any():
        return 0.0
    difference = front_x[medial].mean() - front_x[lateral].mean()
    return float(np.tanh(difference / (0.03 * length)))


def _ball_cue(grid: _LowerEnvelope, length: float) -> float:
    rows = np.arange(grid.occupied.shape[0])[:, None]
    top = np.where(grid.occupied, rows, -1).max(axis=0).astype(float)
    bottom = np.where(grid.occupied, rows, grid.occupied.shape[0]).min(axis=0).astype(float)
    region = np.flatnonzero((grid.xs >= 0.50 * length) & (grid.xs <= 0.85 * length) & (top >= 0))
    if len(region) < 5:
        return 0.0
    kernel = np.ones(5) / 5.0  # ±5 mm at 2 mm columns
    medial = np.convolve(top[region], kernel, mode="same")
    lateral = np.convolve(bottom[region], kernel, mode="same")
    inner = slice(2, len(region) - 2)
    medial_x = grid.xs[region][inner][np.argmax(medial[inner])]
    lateral_x = grid.xs[region][inner][np.argmin(lateral[inner])]
    return float(np.tanh((medial_x - lateral_x) / (0.03 * length)))


def scan_kind(points_mm: np.ndarray, *, length_mm: float) -> ScanKind:
    """FULL when the dorsum covers the midfoot, PLANTAR otherwise.

    Over 45–55 %FL (where the spec takes the dorsal height), the columns of
    a 5 mm grid across the middle 60 % of the foot's width: a full scan has
    the dorsum tens of mm above the sole in every one of them; a plantar
    scan's are the sole alone, or, where it is trimmed just below the top of
    the dorsum, miss the dorsum's crown. FULL when at least 90 % of them are
    two layers more than 15 mm apart.
    """
    x, y, z = points_mm.T
    region = (x >= 0.45 * length_mm) & (x <= 0.55 * length_mm)
    if region.sum() < 10:
        return ScanKind.PLANTAR
    step = 5.0  # a few points of each surface in every column, even in a sparse scan
    col = ((x[region] - x[region].min()) / step).astype(np.int64)
    row = ((y[region] - y[region].min()) / step).astype(np.int64)
    shape = (row.max() + 1, col.max() + 1)
    flat = row * shape[1] + col
    top = np.full(shape[0] * shape[1], -np.inf)
    bottom = np.full(shape[0] * shape[1], np.inf)
    np.maximum.at(top, flat, z[region])
    np.minimum.at(bottom, flat, z[region])
    top, bottom = top.reshape(shape), bottom.reshape(shape)
    occupied = np.isfinite(top)
    rows = np.arange(shape[0])[:, None]
    first = np.where(occupied, rows, shape[0]).min(axis=0)
    last = np.where(occupied, rows, -1).max(axis=0)
    centre, half = (first + last) / 2, (last - first) / 2
    middle = (np.abs(rows - centre) <= 0.6 * half) & (last >= first) & occupied
    if not middle.any():
        return ScanKind.PLANTAR
    two_layers = occupied & (top - bottom > 15.0)
    return ScanKind.FULL if two_layers[middle].mean() >= 0.9 else ScanKind.PLANTAR


# --- geometry helpers --------------------------------------------------------------------------


def _apply(transform: np.ndarray, points_mm: np.ndarray) -> np.ndarray:
    points = np.asarray(points_mm, dtype=np.float64)
    return points @ transform[:3, :3].T + transform[:3, 3]


def _plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.eye(3)[np.argmin(np.abs(normal))]
    e1 = np.cross(normal, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def _voxel_means(points: np.ndarray, voxel_mm: float) -> np.ndarray:
    """The mean of the points in each voxel."""
    keys = np.floor((points - points.min(axis=0)) / voxel_mm).astype(np.int64)
    dims = keys.max(axis=0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, points[:, i], len(counts)) for i in range(3)], 1)
    return sums / counts[:, None]


def _thin_axis(summary: np.ndarray) -> np.ndarray:
    """Unit vector across the forefoot's thin dimension (the foot's vertical, up to sign).

    The cross-sections 10–35 % from each end of the principal axis: the
    forefoot's is wider than it is tall; the hindfoot's is tall (ankle, leg)
    or round, never as thin. The end with the thinner cross-section gives
    the axis; its minor direction is the vertical.
    """
    centred = summary - summary.mean(axis=0)
    axis = np.linalg.eigh(centred.T @ centred)[1][:, 2]
    e1, e2 = _plane_basis(axis)
    s = centred @ axis
    lo, hi = np.percentile(s, [0.5, 99.5])
    t = (s - lo) / (hi - lo)
    best = None
    for start in (0.10, 0.65):
        part = (t >= start) & (t <= start + 0.25)
        if part.sum() < 10:
            continue
        # Centre each 5 mm slice so the dorsum's slope along the foot does not count as height.
        slab = np.floor((s[part] - s[part].min()) / 5.0).astype(np.int64)
        cross = np.column_stack([centred[part] @ e1, centred[part] @ e2])
        counts = np.maximum(np.bincount(slab), 1)
        means = np.stack([np.bincount(slab, cross[:, i]) for i in range(2)], 1) / counts[:, None]
        spread = cross - means[slab]
        eigval, eigvec = np.linalg.eigh(spread.T @ spread / len(spread))
        if best is None or eigval[0] < best[0]:
            best = (eigval[0], eigvec[0, 0] * e1 + eigvec[1, 0] * e2)
    if best is None:
        raise NotAFootError("the scan has too few points to frame a foot: scan the whole foot")
    return best[1]


def project_to_tangent_planes(
    points: np.ndarray, cloud: np.ndarray, *, neighbours: int = _NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray]:
    """Project points onto the plane fitted to their nearest neighbours in ``cloud``.

    A moving-least-squares step: it removes the noise across the surface
    (about threefold with 16 neighbours) and pulls a stray point onto the
    surface around it. Returns the projected points and the fitted unit
    normals (unoriented).
    """
    fit = _tangent_fit(points, cloud, neighbours)
    return fit.projected, fit.normals


@dataclass(frozen=True, eq=False)
class _TangentFit:
    projected: np.ndarray  #: (N, 3) points projected onto their tangent planes
    normals: np.ndarray  #: (N, 3) unoriented unit normals
    distances: np.ndarray  #: (N, k) distances to the k nearest points of the cloud
    spread_mm2: np.ndarray  #: (N,) variance of the neighbourhood across its plane

    def noise_mm(self) -> float:
        """Residual noise of the projected points: 0.4 × the typical spread across the planes.

        The factor is measured: Gaussian noise σ along the normals leaves
        0.33 σ after one projection with 16 neighbours, and the median
        spread's root is 0.82 σ.
        """
        return 0.4 * float(np.sqrt(np.median(np.maximum(self.spread_mm2, 0.0))))


def _tangent_fit(points: np.ndarray, cloud: np.ndarray, neighbours: int) -> _TangentFit:
    from scipy.spatial import cKDTree

    k = min(neighbours, len(cloud))
    distance, index = cKDTree(cloud).query(points, k=k, workers=-1)
    near = cloud[index]
    centroid = near.mean(axis=1)
    spread = near - centroid[:, None, :]
    eigval, eigvec = np.linalg.eigh(np.einsum("nki,nkj->nij", spread, spread) / k)
    normal = eigvec[:, :, 0]
    offset = np.einsum("ni,ni->n", points - centroid, normal)
    return _TangentFit(points - offset[:, None] * normal, normal, distance, eigval[:, 0])


def extreme_mm(points: np.ndarray, direction: np.ndarray) -> float:
    """The largest ``p · direction`` of the surface the noisy points sample.

    Looked for among the points within 20 mm of the 99.9th percentile of
    ``s = p · direction`` (so a few stray points beyond the foot cannot move
    the search); points without close neighbours (stray ones) are dropped.
    The rest within 8 mm of their extreme are projected onto their local
    tangent planes twice (each pass cuts the noise about threefold; the raw
    maximum would sit several noise deviations out), and the third largest
    value is taken, so no single point decides. On synthetic feet this is
    within ±0.3 mm of the true extreme at 0 and 0.5 mm noise.
    """
    from scipy.spatial import cKDTree

    s = points @ direction
    local = points[s >= np.percentile(s, 99.9) - 20.0]
    if len(local) < 2 * _NEIGHBOURS:
        return float(s.max())
    gap = cKDTree(local).query(local, k=8)[0][:, -1]
    local = local[gap <= 2.0 * np.median(gap)]
    s_local = local @ direction
    cap = local[s_local >= s_local.max() - 8.0]
    for _ in range(2):
        cap = _tangent_fit(cap, cap, _NEIGHBOURS).projected
    return float(np.sort(cap @ direction)[-min(3, len(cap))])
