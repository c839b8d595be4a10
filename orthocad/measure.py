"""Foot measurements by the spec's definitions, their classification, and the scan-quality verdict.

Every measurement follows ``docs/frame.md`` on a framed foot
(:class:`orthocad.frame.Foot`: canonical frame, mm, +Y medial). The
definitions are written for the true surface; a scan gives noisy points,
and most definitions take an extreme of them, which noise pushes outward
(the maximum of many points sits a few noise deviations out). So each
measurement is estimated where it is decided, and only there:

* Stray points go first: points alone in their 6 mm block and, when
  cleaning found a floor, the floor's fringe it leaves around the sole.
* Every point gets a rough outward normal from a plane fitted on a 2 mm
  voxel summary: cheap, and enough to pick candidates, to weight points,
  to tell the sole from the dorsum, and for the quality gate.
* Extremes (toe tip and pternion, the width extremes, the top of the
  dorsum, the heel slices, the medial and lateral outlines): the points
  near each are moved onto a quadric fitted to their neighbours
  (second-order moving least squares, which removes the noise along the
  normal without flattening tips and edges), and the definition is
  applied to those.
* The medial arch height is the top of the plantar surface's medial third:
  on the arch's medial wall, the point whose normal has n_z = −0.5. Normals
  estimated from noisy points cannot resolve the sharp turn from sole to
  wall, so it is found without them, as the section's support point in that
  normal's direction (:func:`_section_supports`).
* The footprint is read from a lower-envelope height grid: the lowest layer
  of the sole's points in each 1 mm cell, a plane fitted over its 3 × 3
  cells (height and slope, hence the plantar rule) evaluated on the 0.5 mm
  raster the definition counts.

Further footprint indices, from the same 0.5 mm contact raster (heel,
midfoot and forefoot are the footprint's length thirds, as for the arch
index):

* ``chippaux_smirak_index`` (Forriol & Pascual 1990): narrowest midfoot
  width over widest forefoot width;
* ``staheli_index`` (Staheli et al. 1987): narrowest midfoot width over
  widest heel width;
* ``clarke_angle_deg`` (Clarke 1933): angle between the footprint's medial
  tangent (touching the heel and the first metatarsal head region) and the
  line from its forefoot touching point to the deepest point of the medial
  concavity; 0 when the medial border has no concavity.

Both ratios are 0 when no midfoot column touches (an unloaded foot).

The medial arch's apex, ``medial_arch_apex_x_mm`` (x from the pternion), is
the centroid of the arch's crest: of the run of 1 mm slices around the
highest one whose smoothed height is within 3 mm of the medial arch height,
each weighted by how far it rises above that level. A vault is often flat on
top for centimetres, where the highest slice follows the noise; the crest's
centroid does not (on synthetic feet with 0.5 mm noise it is within 3 mm of
the truth, the highest slice up to 16 mm off). The arch support's apex goes
there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad._callable import make_callable
from orthocad.enums import ArchType, Loading, RearfootType, ScanKind, Side, Units
from orthocad.errors import InputError
from orthocad.quality import OUTLINE_TOP_MM, PLANTAR_NZ, Quality, assess

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

    from orthocad.frame import Foot
    from orthocad.params import Params
    from orthocad.scan import Scan

#: The spec's measurement names, in report order.
SPEC_FIELDS = (
    "foot_length_mm", "ball_width_mm", "heel_width_mm", "truncated_length_mm", "fifth_met_x_mm",
    "dorsal_height_mm", "arch_height_index", "medial_arch_height_mm", "arch_index",
    "rearfoot_angle_deg",
)
#: Further footprint indices and the arch apex (see the module docstring for their definitions).
EXTRA_FIELDS = ("chippaux_smirak_index", "staheli_index", "clarke_angle_deg",
                "medial_arch_apex_x_mm")

CONTACT_MM = 3.0  #: footprint: plantar surface within this of the support plane (spec)
HEEL_SLICES_MM = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0)  #: rearfoot line (spec)
RASTER_MM = 0.5  #: footprint raster (frame.md)

_VOXEL_MM = 2.0  # summary voxels: rough normals and stray points
_ROUGH_NEIGHBOURS = 10  # voxels in a rough normal's plane fit
_FIT_NEIGHBOURS = 96  # points in a quadric fit: ≈ 4 mm radius in a 1 mm-voxel cloud
_NEAR_MM = 3.0  # points this close to a raw extreme are refined: noise overshoots by less
_OUTLINE_TOP = 5  # an outline bin's value: the mean of its most extreme refined points
_OUTLINE_NEAR_MM = 2.5  # ... of the points within this of their bin's raw extreme
_FRINGE_TOP_MM = 3.0  # floor-fringe points lie below this; the foot above it shows its outline
_LAYER_MM = 1.5  # a grid cell's lowest layer: within this of its lowest point (≈ 4 noise sigma)
#: (y, z) of the medial wall's outward normal where n_z = −0.5: the plantar surface's limit.
_ARCH_NORMAL = np.array([math.sqrt(3.0) / 2.0, -0.5])
_SLAB_MM = 10.0  # a section's support fit takes the points within this of its x,
_REACH_MM = 2.5  # within this of its support point along the section,
_ALIGN_POWER = 4  # weighted by cos^this of the angle between their normal and the direction
_CREST_MM = 3.0  # the arch's crest: the slices within this of its top


@dataclass(frozen=True)
class Classification:
    """Arch and rearfoot classes, each with the index that drove it and why."""

    arch: ArchType | None  #: None when no applicable index (e.g. non-weight-bearing plantar scan)
    arch_driver: str | None  #: the measurement that decided the arch class
    arch_reason: str  #: the threshold crossed, or why not applicable
    arch_conflict: str | None  #: where two indices disagree: which won and why
    rearfoot: RearfootType | None
    rearfoot_driver: str | None
    rearfoot_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Measurements:
    """One foot's measurements: a value the scan cannot give is None, its reason in ``missing``."""

    side: Side
    scan_kind: ScanKind
    loading: Loading
    foot_length_mm: float | None
    ball_width_mm: float | None
    heel_width_mm: float | None
    truncated_length_mm: float | None
    fifth_met_x_mm: float | None
    dorsal_height_mm: float | None
    arch_height_index: float | None
    medial_arch_height_mm: float | None
    arch_index: float | None
    rearfoot_angle_deg: float | None
    chippaux_smirak_index: float | None
    staheli_index: float | None
    clarke_angle_deg: float | None
    classification: Classification
    #: x from the pternion of the medial arch's crest middle (module docstring); last, with a
    #: default, so results built by hand need not give it
    medial_arch_apex_x_mm: float | None = None
    quality: Quality = field(default_factory=lambda: Quality(checks=()))  #: no checks: not assessed
    missing: dict[str, str] = field(default_factory=dict)
    #: Points the measurements rest on, in the foot's canonical frame (mm; ``foot.to_scan``
    #: maps them into the scan): ``toe_tip`` (max x: the tip of the longest toe, the big toe's
    #: on most feet), ``pternion`` (min x), ``mth1`` and ``mth5`` (the outline apexes, on the
    #: support plane), ``arch_top`` (the medial arch height's point), ``hallux_tip`` (the big
    #: toe's tip along the spec's long axis, pternion → second toe).
    landmarks_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract: the spec's names (None when missing, reason under ``missing``)."""
        out: dict[str, Any] = {"side": self.side.value, "scan_kind": self.scan_kind.value,
                               "loading": self.loading.value}
        for name in SPEC_FIELDS + EXTRA_FIELDS:
            value = getattr(self, name)
            out[name] = None if value is None else round(float(value), 4)
        out["missing"] = dict(self.missing)
        out["classification"] = self.classification.to_dict()
        out["quality"] = self.quality.to_dict()
        out["landmarks_mm"] = {name: [round(float(c), 3) for c in point]
                               for name, point in self.landmarks_mm.items()}
        return out

    def to_row(self) -> dict[str, Any]:
        """One flat CSV row per foot (landmarks left out: they are for the JSON and reports)."""
        out = {k: v for k, v in self.to_dict().items() if not isinstance(v, dict)}
        out.update({f"class_{k}": v for k, v in self.classification.to_dict().items()})
        out["quality_passed"] = self.quality.passed
        out["quality_forced"] = self.quality.forced
        out["quality_reasons"] = "; ".join(self.quality.reasons)
        out["missing"] = "; ".join(f"{k}: {v}" for k, v in self.missing.items())
        return out


@dataclass(frozen=True, eq=False)
class Surface:
    """A framed foot's points without stray ones, with rough outward normals."""

    points_mm: np.ndarray  #: (N, 3) canonical points (the foot's frame)
    normals: np.ndarray  #: (N, 3) unit outward normals of 2 mm voxel plane fits
    noise_mm: float  #: RMS distance of the points from local quadrics (median over a sample)
    spacing_mm: float  #: median distance from a point to its nearest neighbour
    tree: cKDTree = field(repr=False)  #: over ``points_mm``


def surface(foot: Foot) -> Surface:
    """The foot's points ready to measure: stray points and floor fringe dropped, rough normals."""
    from scipy.spatial import cKDTree

    points = np.asarray(foot.points_mm, dtype=np.float64)
    points = points[_supported(points)]
    if foot.support_from_floor:
        points = points[~_floor_fringe(points)]
    tree = cKDTree(points)
    spacing = float(np.median(tree.query(points[:: max(1, len(points) // 5000)], k=2)[0][:, 1]))
    normals = _rough_normals(points, scan_kind=foot.scan_kind)
    sample = np.random.default_rng(0).choice(len(points), min(len(points), 2000), replace=False)
    _, _, residual = _quadrics(points[sample], points, tree)
    return Surface(points_mm=points, normals=normals, noise_mm=float(np.median(residual)),
                   spacing_mm=spacing, tree=tree)


def _voxels(points: np.ndarray, size_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's voxel (its row in the unique voxels), the voxels' flat keys (sorted) and the
    key strides of the x, y, z axes (a voxel's neighbour along x has key + stride[0])."""
    keys = np.floor((points - points.min(axis=0)) / size_mm).astype(np.int64) + 1
    dims = keys.max(axis=0) + 2  # a free layer around, so neighbours' keys never wrap
    strides = np.array([dims[1] * dims[2], dims[2], 1])
    unique, inverse = np.unique(keys @ strides, return_inverse=True)
    return inverse, unique, strides


def _supported(points: np.ndarray) -> np.ndarray:
    """Points with a few others in their 6 mm block (3 × 3 × 3 voxels): not stray.

    Cleaning has removed most stray points already; this catches the few it
    kept near the foot, alone in their block, which would set an extreme.
    "A few" is 3, or 3 % of the typical block's count on dense scans, so that
    a region scanned 10× more sparsely than the rest still counts as surface
    (the quality gate judges it).
    """
    inverse, keys, strides = _voxels(points, _VOXEL_MM)
    counts = np.bincount(inverse)
    block = np.zeros(len(keys), np.int64)
    for offset in np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1]), -1).reshape(-1, 3):
        neighbour = keys + offset @ strides
        row = np.minimum(np.searchsorted(keys, neighbour), len(keys) - 1)
        block += np.where(keys[row] == neighbour, counts[row], 0)
    support = block[inverse]
    return support >= max(3.0, 0.03 * float(np.median(support)))


def _floor_fringe(points: np.ndarray) -> np.ndarray:
    """Floor points left beside the foot: low, and outside or at the outline of the foot above.

    Cleaning removes the floor outside the foot's silhouette but keeps a
    fringe a few mm wide around it, which would widen and lengthen the foot
    and the footprint. The foot's outline seen from above is that of its
    points above 3 mm; its walls bulge out over the contact edge, so the
    sole touches the floor well inside the outline (≥ 4 mm on synthetic
    feet), while the fringe lies outside it or within a raster cell of it.
    Low points outside the outline shrunk by 1.5 mm are floor.
    """
    from scipy import ndimage

    high = points[:, 2] >= _FRINGE_TOP_MM
    if high.sum() < 100:
        return np.zeros(len(points), bool)
    cell = 0.5
    origin = points[:, :2].min(axis=0) - 4 * cell
    ij = np.floor((points[:, :2] - origin) / cell).astype(np.int64)
    shape = tuple(ij.max(axis=0) + 5)
    outline = np.zeros(shape, bool)
    outline[tuple(ij[high].T)] = True
    # Closing bridges the point spacing (≈ 1 mm after cleaning) without growing the outline.
    outline = ndimage.binary_fill_holes(ndimage.binary_closing(outline, iterations=3))
    inside = ndimage.binary_erosion(outline, iterations=3)
    return ~high & ~inside[tuple(ij.T)]


def _rough_normals(points: np.ndarray, *, scan_kind: ScanKind) -> np.ndarray:
    """Outward unit normals of plane fits on 2 mm voxel means (a voxel's, given to its points)."""
    from scipy.spatial import cKDTree

    inverse, _, _ = _voxels(points, _VOXEL_MM)
    counts = np.bincount(inverse)[:, None]
    means = np.stack([np.bincount(inverse, points[:, i]) for i in range(3)], axis=1) / counts
    k = min(_ROUGH_NEIGHBOURS, len(means))
    _, index = cKDTree(means).query(means, k=k, workers=-1)
    near = means[index] - means[index].mean(axis=1, keepdims=True)
    normals = np.linalg.eigh(np.einsum("nki,nkj->nij", near, near))[1][:, :, 0]
    return _orient_outward(means, normals, scan_kind=scan_kind)[inverse]


def _orient_outward(points: np.ndarray, normals: np.ndarray, *, scan_kind: ScanKind) -> np.ndarray:
    """Flip normals to point out of the foot.

    Each cross-section (1 mm of x) is a closed loop on a full scan, so
    outward is away from the loop's centre. A plantar scan's cross-section is
    a U (sole and side walls, open at the top): outward is away from the
    middle of the U's opening, which also gets right any wall seen above the
    foot's widest point (facing up and out).
    """
    x_bin = np.floor(points[:, 0] - points[:, 0].min()).astype(np.int64)
    counts = np.maximum(np.bincount(x_bin), 1).astype(np.float64)
    centre_y = np.bincount(x_bin, points[:, 1]) / counts
    if scan_kind is ScanKind.FULL:
        centre_z = np.bincount(x_bin, points[:, 2]) / counts
    else:
        centre_z = np.full(len(counts), -np.inf)
        np.maximum.at(centre_z, x_bin, points[:, 2])
    away = np.stack(
        [np.zeros(len(points)), points[:, 1] - centre_y[x_bin], points[:, 2] - centre_z[x_bin]], 1
    )
    flip = np.einsum("ni,ni->n", normals, away) < 0
    return np.where(flip[:, None], -normals, normals)


def _quadrics(query: np.ndarray, cloud: np.ndarray, tree: cKDTree, *,
              neighbours: int = _FIT_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project points onto quadrics fitted to their neighbours in ``cloud``.

    A quadric height field over the neighbourhood's tangent plane (Gaussian
    weights) removes the noise along the normal without flattening curved
    parts: a plane fit would shorten convex tips by ~0.3 mm and tilt the
    normals on the sole's rounded edges. Returns the projected points, their
    unit normals (unoriented) and each fit's weighted RMS residual.
    """
    k = min(neighbours, len(cloud))
    _, index = tree.query(query, k=k, workers=-1)
    rel = cloud[index] - query[:, None, :]
    centred = rel - rel.mean(axis=1, keepdims=True)
    axes = np.linalg.eigh(np.matmul(centred.transpose(0, 2, 1), centred))[1]
    local = np.matmul(rel, axes)  # (normal, tangent, tangent) coordinates
    h, u, v = local[..., 0], local[..., 1], local[..., 2]
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=2)
    r2 = u * u + v * v
    weight = np.exp(-r2 / np.maximum(r2.mean(axis=1, keepdims=True), 1e-12))
    weighted = (design * weight[..., None]).transpose(0, 2, 1)
    normal_matrix = np.matmul(weighted, design) + 1e-9 * np.eye(6)
    coef = np.linalg.solve(normal_matrix, np.matmul(weighted, h[..., None]))[..., 0]
    residual = h - np.matmul(design, coef[..., None])[..., 0]
    rms = np.sqrt(np.sum(weight * residual**2, axis=1) / np.sum(weight, axis=1))
    normal, t1, t2 = axes[:, :, 0], axes[:, :, 1], axes[:, :, 2]
    projected = query + coef[:, :1] * normal
    normals = normal - coef[:, 1:2] * t1 - coef[:, 2:3] * t2
    return projected, normals / np.linalg.norm(normals, axis=1, keepdims=True), rms


@dataclass(frozen=True, eq=False)
class _Refined:
    """Points of the surface moved onto their local quadrics, looked up by surface index."""

    index: np.ndarray  #: sorted unique indices into the surface's points
    points: np.ndarray  #: (len(index), 3) the refined points

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.points[np.searchsorted(self.index, indices)]


def _refine(s: Surface, candidates: list[np.ndarray]) -> _Refined:
    """Refine the union of the candidate sets in one batch of quadric fits."""
    index = np.unique(np.concatenate(candidates))
    return _Refined(index=index, points=_quadrics(s.points_mm[index], s.points_mm, s.tree)[0])


def _near_max(values: np.ndarray, mask: np.ndarray, margin: float = _NEAR_MM) -> np.ndarray:
    """Indices of the masked points within ``margin`` of the masked maximum."""
    where = np.flatnonzero(mask)
    if len(where) == 0:
        return where
    return where[values[where] >= values[where].max() - margin]


def _per_bin_near_max(bins: np.ndarray, values: np.ndarray, mask: np.ndarray, margin: float
                      ) -> np.ndarray:
    """Indices of the masked points within ``margin`` of their bin's maximum."""
    where = np.flatnonzero(mask)
    if len(where) == 0:
        return where
    b = bins[where] - bins[where].min()
    top = np.full(b.max() + 1, -np.inf)
    np.maximum.at(top, b, values[where])
    return where[values[where] >= top[b] - margin]


@dataclass(frozen=True)
class _Regions:
    """Per measurement, the indices of the points near its extreme, chosen on the raw points."""

    tips: np.ndarray  #: the toe tip and the pternion (max and min x)
    ball: np.ndarray  #: the width extremes over 55–80 %FL
    heel: np.ndarray  #: the width extremes over 10–22 %FL, up to 30 mm
    medial_outline: np.ndarray  #: per 1 mm of x around 55–80 %FL, near the max y
    lateral_outline: np.ndarray  #: ... near the min y
    dorsum: np.ndarray  #: the top at 50 %FL (full scans)
    rearfoot: np.ndarray  #: the heel slices' extremes (heels that reach the top slice)
    hallux: np.ndarray  #: the big toe's front, near its max along the spec's long axis
    long_axis: np.ndarray  #: (2,) unit x-y direction from the pternion toward the second toe


def _candidates(s: Surface, *, scan_kind: ScanKind) -> _Regions:
    x, y, z = s.points_mm.T
    x = x - x.min()
    fl = float(x.max())
    none = np.zeros(0, np.int64)
    everywhere = np.ones(len(x), bool)

    def span(lo: float, hi: float, pad: float = _NEAR_MM) -> np.ndarray:
        return (x >= lo * fl - pad) & (x <= hi * fl + pad)

    ball, heel = span(0.55, 0.80), span(0.10, 0.22) & (z <= 30.0 + _NEAR_MM)
    outline = span(0.55, 0.80, 16.0)  # the bins the apex fit and the ±5 mm average reach
    bins = np.floor(x).astype(np.int64)
    rearfoot = [none]
    if scan_kind is ScanKind.FULL or z[x <= 0.15 * fl].max(initial=0.0) > HEEL_SLICES_MM[-1]:
        for level in HEEL_SLICES_MM:
            band = span(0.0, 0.15) & (np.abs(z - level) <= 1.5)
            rearfoot += [_near_max(y, band, 2.0), _near_max(-y, band, 2.0)]
    top = np.abs(x - 0.5 * fl) <= 2.0 + _NEAR_MM
    return _Regions(
        tips=np.concatenate([_near_max(x, everywhere), _near_max(-x, everywhere)]),
        ball=np.concatenate([_near_max(y, ball), _near_max(-y, ball)]),
        heel=np.concatenate([_near_max(y, heel), _near_max(-y, heel)]),
        medial_outline=_per_bin_near_max(bins, y, outline, _OUTLINE_NEAR_MM),
        lateral_outline=_per_bin_near_max(bins, -y, outline, _OUTLINE_NEAR_MM),
        dorsum=_near_max(z, top) if scan_kind is ScanKind.FULL else none,
        rearfoot=np.concatenate(rearfoot),
        **_hallux_front(s.points_mm, x, fl, ball),
    )


def _hallux_front(points: np.ndarray, x: np.ndarray, fl: float, ball: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The big toe's front along the spec's long axis (pternion → second toe tip).

    The frame's x is the silhouette's principal axis, which the spec accepts
    for the frame; but a big toe's front is often flat across (a few tenths
    of a millimetre over 8 mm of y on the FIND template), so which of its
    points is the tip depends on the axis by a few millimetres. The tip is
    taken along the spec's own axis: the second toe is the longest point in
    the band 18–36 % of the ball width lateral of the longest toe (the toes'
    pitch), and the hallux is what lies medial of the midpoint between them.
    The longest toe is taken to be the hallux (an Egyptian or square foot).
    """
    y = points[:, 1]
    tip = int(np.argmax(x))
    width = float(np.ptp(y[ball])) if ball.any() else 0.4 * fl
    lateral = y[tip] - y
    band = np.flatnonzero((lateral >= 0.18 * width) & (lateral <= 0.36 * width) & (x >= 0.8 * fl))
    axis = np.array([1.0, 0.0])
    medial = x >= 0.8 * fl
    if len(band):
        second = band[np.argmax(x[band])]
        axis = np.array([x[second], y[second] - y[np.argmin(x)]])
        axis /= np.linalg.norm(axis)
        medial &= y >= 0.5 * (y[tip] + y[second])
    along = np.column_stack([x, y]) @ axis
    return {"hallux": _near_max(along, medial), "long_axis": axis}


def _arch_wall(s: Surface) -> np.ndarray:
    """The arch's medial wall and the sole next to it (indices): facing down and medially,
    within 6 mm of the most medial-downward point of their 1 mm slice, over 25–65 %FL and the
    support fits' reach beyond."""
    x = s.points_mm[:, 0] - s.points_mm[:, 0].min()
    fl = float(x.max())
    facing = (x >= 0.25 * fl - _SLAB_MM - 1.0) & (x <= 0.65 * fl + _SLAB_MM + 1.0)
    facing &= (s.normals[:, 1] > 0.0) & (s.normals[:, 2] < 0.0)
    g = s.points_mm[:, 1:] @ _ARCH_NORMAL
    return _per_bin_near_max(np.floor(x).astype(np.int64), g, facing, 6.0)


def _in(x: np.ndarray, length_mm: float, lo_pct: float, hi_pct: float) -> np.ndarray:
    return (x >= lo_pct * length_mm) & (x <= hi_pct * length_mm)


def _width(y: np.ndarray) -> float | None:
    return float(y.max() - y.min()) if len(y) else None


def _outline_apex(x: np.ndarray, y: np.ndarray, length_mm: float, *, medial: bool
                  ) -> tuple[float, float] | None:
    """x (and the outline's y there) of the smoothed medial (max y) or lateral (min y) outline's
    extreme in 55–80 %FL.

    The outline is max (min) y of the foot per 1 mm bin from the pternion,
    moving-averaged over ±5 mm of x (frame.md), here of the refined points,
    each bin's value the mean of its ``_OUTLINE_TOP`` most extreme points:
    the bins' maxima would differ by their residual noise, and only the
    outline's shape decides the apex. Near its extreme the outline is flat (a
    tenth of a millimetre over several), so its argmax would still follow
    the noise: a cubic fitted to the smoothed outline within ±10 mm of the
    argmax gives the extreme instead.
    """
    signed = y if medial else -y
    bins = np.floor(x).astype(np.int64)
    n_bins = int(math.ceil(0.80 * length_mm)) + 17
    keep = (bins >= 0) & (bins < n_bins)
    bins, signed = bins[keep], signed[keep]
    # Rank the points within their bin, most extreme first, and average the top few.
    order = np.lexsort((-signed, bins))
    bins, signed = bins[order], signed[order]
    start = np.searchsorted(bins, bins, side="left")
    top = np.arange(len(bins)) - start < _OUTLINE_TOP
    count = np.bincount(bins[top], minlength=n_bins)
    edge = np.bincount(bins[top], signed[top], minlength=n_bins) / np.maximum(count, 1)
    centres = np.arange(n_bins) + 0.5
    known = count > 0
    if known.sum() < 11:
        return None
    edge = np.interp(centres, centres[known], edge[known])
    smooth = np.convolve(edge, np.ones(11) / 11.0, mode="same")  # ±5 mm of x
    region = np.flatnonzero(_in(centres, length_mm, 0.55, 0.80))
    region = region[(region >= 15) & (region < n_bins - 15)]
    if len(region) == 0:
        return None
    best = region[np.argmax(smooth[region])]
    near = np.arange(best - 10, best + 11)
    coef = np.polyfit(centres[near] - centres[best], smooth[near], 3)
    slope = np.polyder(coef)
    roots = np.roots(slope)
    roots = roots[np.isreal(roots)].real
    roots = roots[(np.abs(roots) <= 10.0) & (np.polyval(np.polyder(slope), roots) < 0)]
    apex = centres[best] + (roots[np.argmin(np.abs(roots))] if len(roots) else 0.0)
    apex = float(np.clip(apex, 0.55 * length_mm, 0.80 * length_mm))
    value = float(np.interp(apex, centres, smooth))
    return apex, value if medial else -value


def _medial_arch_height(points: np.ndarray, normals: np.ndarray, length_mm: float, *,
                        spacing_mm: float) -> tuple[float, np.ndarray, float] | None:
    """Top of the plantar surface's medial third over 25–65 %FL, where it is, and the x of
    the crest's centroid (module docstring).

    Along the arch's medial wall the outward normal turns from down (the
    sole) toward horizontal as the wall rises, so the top of the plantar
    surface (n_z < −0.5) in a slice of x is the wall point whose normal is
    (0, √3/2, −1/2): the section's support point in that direction
    (:func:`_section_supports`). Normals estimated from noisy points cannot
    resolve the sharp turn from sole to wall (they smooth over a few noise
    widths and put the limit too high); the support fit needs none. The
    slices' heights are smoothed by a running median over 9 mm before the
    maximum is taken, so no one slice decides.
    """
    lo = 0.25 * length_mm
    n_slices = int(math.floor(0.40 * length_mm)) + 1
    support, valid = _section_supports(points, normals, lo + 0.5, n_slices,
                                       direction=_ARCH_NORMAL, spacing_mm=spacing_mm)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(support[:, 1], 4, constant_values=np.nan), 9)
    enough = np.count_nonzero(np.isfinite(windows), axis=1) >= 5
    if not enough.any():
        return None
    smooth = np.full(n_slices, -np.inf)
    smooth[enough] = np.nanmedian(windows[enough], axis=1)
    best = int(np.argmax(smooth))
    y_top = support[best, 0] if valid[best] else float(np.nanmedian(support[valid, 0]))
    return (float(smooth[best]), np.array([lo + best + 0.5, y_top, smooth[best]]),
            lo + 0.5 + _crest_centroid(smooth, _CREST_MM))


def _crest_centroid(height: np.ndarray, depth: float) -> float:
    """Index-weighted centroid of a profile's crest: the run of samples around its maximum
    within ``depth`` of it, each weighted by its rise above ``max − depth``. A sample without
    a value (−inf: too few supports) neither ends the run nor weighs in it."""
    best = int(np.argmax(height))
    level = height[best] - depth
    known = np.isfinite(height)
    below = np.flatnonzero(known & (height < level))
    first = below[below < best].max(initial=-1) + 1
    last = below[below > best].min(initial=len(height)) - 1
    weight = np.where(known, height - level, 0.0)[first:last + 1]
    return float(np.sum(np.arange(first, last + 1) * weight) / np.sum(weight))


def _section_supports(points: np.ndarray, normals: np.ndarray, first_mm: float, n_slices: int, *,
                      direction: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Support points of the foot's cross-sections: per 1 mm slice of x, the section's point
    furthest along ``direction`` (a unit (y, z) vector), i.e. where its outward normal is
    ``direction`` on a convex section.

    Slice ``k`` is centred at ``first_mm + k`` and fits the points within
    ±10 mm of x (linear and quadratic terms in x absorb the section's drift
    along the foot): ``g = p·direction`` as a cubic in the coordinate ``t``
    along the section, within ±2.5 mm of the current support point,
    re-centred on the fitted maximum three times. Noise moves points along
    their normals, so points count by how squarely their rough normal faces
    ``direction`` (cos⁴): their noise then goes into ``g``, which least
    squares averages out, and not into ``t``, where it would bias the fit.
    Returns (n, 2) support points (y, z) and which slices gave one.
    """
    tangent = np.array([-direction[1], direction[0]])
    x, yz = points[:, 0], points[:, 1:]
    half = max(_SLAB_MM, 4.0 * spacing_mm)
    # (point, slice) pairs: each point joins every slice whose ±half window holds it.
    first = np.maximum(np.ceil(x - first_mm - half), 0).astype(np.int64)
    last = np.minimum(np.floor(x - first_mm + half), n_slices - 1).astype(np.int64)
    count = np.maximum(last - first + 1, 0)
    point = np.repeat(np.arange(len(x)), count)
    slice_ = first[point] + np.arange(len(point)) - np.repeat(np.cumsum(count) - count, count)
    dx = x[point] - (first_mm + slice_)
    g, t = yz[point] @ direction, yz[point] @ tangent
    weight = np.clip(normals[point, 1:] @ direction, 0.0, 1.0) ** _ALIGN_POWER
    # Start at the slice's furthest points.
    central = np.abs(dx) <= 1.0
    top = np.full(n_slices, -np.inf)
    np.maximum.at(top, slice_[central], g[central])
    start = central & (g >= top[slice_] - 0.5)
    count_start = np.bincount(slice_[start], minlength=n_slices)
    with np.errstate(invalid="ignore", divide="ignore"):
        t0 = np.bincount(slice_[start], t[start], minlength=n_slices) / count_start
    started = count_start > 0
    reach = max(_REACH_MM, 2.5 * spacing_mm)
    valid, g_peak = np.zeros(n_slices, bool), np.zeros(n_slices)
    for _ in range(3):
        inside = started[slice_] & (np.abs(t - t0[slice_]) <= reach)
        peak, g_peak, valid = _cubic_peaks(t[inside] - t0[slice_[inside]], g[inside], dx[inside],
                                           weight[inside], slice_[inside], n_slices, reach)
        t0 = t0 + peak
    support = t0[:, None] * tangent + g_peak[:, None] * direction
    valid &= started
    return np.where(valid[:, None], support, np.nan), valid


def _cubic_peaks(t: np.ndarray, g: np.ndarray, dx: np.ndarray, weight: np.ndarray,
                 slices: np.ndarray, n_bins: int, reach: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice, weighted least squares g = a + b·t + c·t² + e·t³ + (f + h·t)·dx + k·dx², and the
    maximum of its cubic at dx = 0 over the slice's points' t range (within ±reach):
    (t of the maximum, g there, usable).

    A slice is usable with at least 12 points and its maximum inside the
    range (at an end, the maximum lies beyond the points fitted). The t
    returned is that of the maximum even for an unusable slice (0 without a
    fit), to re-centre on.
    """
    design = np.stack([np.ones_like(t), t, t * t, t ** 3, dx, dx * t, dx * dx], axis=1)
    n_terms = design.shape[1]
    w_design = design * weight[:, None]
    normal_matrix = np.stack(
        [np.bincount(slices, w_design[:, i] * design[:, j], minlength=n_bins)
         for i in range(n_terms) for j in range(n_terms)], axis=1).reshape(n_bins, n_terms, n_terms)
    rhs = np.stack([np.bincount(slices, w_design[:, i] * g, minlength=n_bins)
                    for i in range(n_terms)], axis=1)
    lo, hi = np.full(n_bins, np.inf), np.full(n_bins, -np.inf)
    np.minimum.at(lo, slices, t)
    np.maximum.at(hi, slices, t)
    usable = (np.bincount(slices, minlength=n_bins) >= 12) & (np.linalg.cond(normal_matrix) < 1e10)
    coef = np.zeros((n_bins, n_terms))
    coef[usable] = np.linalg.solve(normal_matrix[usable], rhs[usable][..., None])[..., 0]
    a, b, c, e = coef[:, 0], coef[:, 1], coef[:, 2], coef[:, 3]
    # Candidates: the ends of the range and the cubic's critical points (3e·t² + 2c·t + b = 0).
    with np.errstate(invalid="ignore", divide="ignore"):
        discriminant = c * c - 3.0 * e * b
        root = np.sqrt(np.maximum(discriminant, 0.0))
        cubic = np.abs(e) > 1e-9
        critical = np.stack([np.where(cubic, (-c + root) / (3.0 * e), -b / (2.0 * c)),
                             np.where(cubic, (-c - root) / (3.0 * e), np.nan), lo, hi], axis=1)
        real = (~cubic | (discriminant >= 0.0))[:, None] | (np.arange(4) >= 2)
        inside = (critical >= lo[:, None]) & (critical <= hi[:, None])
        critical = np.where(real & inside, critical, np.nan)
        value = (a[:, None] + b[:, None] * critical + c[:, None] * critical ** 2
                 + e[:, None] * critical ** 3)
    value = np.where(np.isfinite(value), value, -np.inf)
    best = np.argmax(value, axis=1)
    rows = np.arange(n_bins)
    peak = critical[rows, best]
    fitted = usable & np.isfinite(peak)
    return np.where(fitted, peak, 0.0), value[rows, best], fitted & (best < 2)


@dataclass(frozen=True, eq=False)
class _Footprint:
    """The contact raster over 0–80 %FL: where the plantar surface is within 3 mm of the plane."""

    xs: np.ndarray  #: x of the raster columns (from the pternion)
    ys: np.ndarray  #: y of its rows
    contact: np.ndarray  #: bool [row, column]


def _footprint(points: np.ndarray, normals: np.ndarray, length_mm: float, *, spacing_mm: float
               ) -> _Footprint | None:
    """Rasterise the footprint from a denoised lower-envelope height grid.

    The points facing down (the sole: a cell without sole points must not
    take the dorsum's height); grid cells of 1 mm (a multiple of the 0.5 mm
    raster that holds a few points on a sparse scan); each cell's lowest
    layer (points within 1.5 mm of its lowest one); a plane fitted by least
    squares to the layers of its
    3 × 3 cells gives the surface's height and slope there, evaluated at the
    centres of the cell's 0.5 mm raster cells. Cells inside the foot's
    outline that hold no point take their nearest fitted cell's plane
    (sampling gaps of a sparse scan). Contact: the plane within 3 mm of
    z = 0 and plantar (slope under 60°, n_z < −0.5).
    """
    from scipy import ndimage

    keep = (points[:, 2] <= OUTLINE_TOP_MM) & (normals[:, 2] < 0.0) & (points[:, 0] >= -2.0) & (
        points[:, 0] <= 0.80 * length_mm + 4.0)
    if keep.sum() < 100:
        return None
    p = points[keep]
    per_cell = max(2, math.ceil(spacing_mm / RASTER_MM))  # raster cells along a grid cell
    grid = per_cell * RASTER_MM
    x0 = -2.0 * grid
    y0 = math.floor(p[:, 1].min() / grid) * grid - 2.0 * grid
    col = np.floor((p[:, 0] - x0) / grid).astype(np.int64)
    row = np.floor((p[:, 1] - y0) / grid).astype(np.int64)
    shape = (int(row.max()) + 3, int(col.max()) + 3)
    flat = row * shape[1] + col
    lowest = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(lowest, flat, p[:, 2])
    layer = p[:, 2] <= lowest[flat] + _LAYER_MM
    p, flat = p[layer], flat[layer]
    # Coordinates about each cell's own centre keep the sums well conditioned.
    dx = p[:, 0] - (x0 + (flat % shape[1] + 0.5) * grid)
    dy = p[:, 1] - (y0 + (flat // shape[1] + 0.5) * grid)
    h = p[:, 2]
    size = shape[0] * shape[1]
    terms = {"1": np.ones_like(h), "x": dx, "y": dy, "z": h, "xx": dx * dx, "xy": dx * dy,
             "yy": dy * dy, "xz": dx * h, "yz": dy * h}
    moments = {k: np.bincount(flat, v, minlength=size).reshape(shape) for k, v in terms.items()}
    occupied = moments["1"] > 0
    # Sum the 3 × 3 neighbours, each shifted to the centre cell's coordinates
    # (a neighbour i, j cells away has its points at dx + i·grid, dy + j·grid).
    total = {k: np.zeros(shape) for k in moments}
    padded = {k: np.pad(v, 1) for k, v in moments.items()}
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            m = {k: v[1 + j:1 + j + shape[0], 1 + i:1 + i + shape[1]] for k, v in padded.items()}
            sx, sy = i * grid, j * grid
            total["1"] += m["1"]
            total["x"] += m["x"] + sx * m["1"]
            total["y"] += m["y"] + sy * m["1"]
            total["z"] += m["z"]
            total["xx"] += m["xx"] + 2 * sx * m["x"] + sx * sx * m["1"]
            total["yy"] += m["yy"] + 2 * sy * m["y"] + sy * sy * m["1"]
            total["xy"] += m["xy"] + sx * m["y"] + sy * m["x"] + sx * sy * m["1"]
            total["xz"] += m["xz"] + sx * m["z"]
            total["yz"] += m["yz"] + sy * m["z"]
    t = total
    a = np.stack([np.stack([t["1"], t["x"], t["y"]], -1), np.stack([t["x"], t["xx"], t["xy"]], -1),
                  np.stack([t["y"], t["xy"], t["yy"]], -1)], -2)
    rhs = np.stack([t["z"], t["xz"], t["yz"]], -1)
    fitted = occupied & (t["1"] >= 3) & (np.abs(np.linalg.det(a)) > 1e-6 * grid**4)
    coef = np.zeros(shape + (3,))
    coef[fitted] = np.linalg.solve(a[fitted], rhs[fitted][..., None])[..., 0]
    # Cells inside the outline without a plane borrow their nearest fitted cell's,
    # moved to their own centre.
    bridge = max(1, math.ceil(2.0 * spacing_mm / grid))
    outline = ndimage.binary_fill_holes(ndimage.binary_closing(occupied, iterations=bridge))
    if not fitted.any():
        return None
    nearest = ndimage.distance_transform_edt(~fitted, return_distances=False, return_indices=True)
    source = coef[nearest[0], nearest[1]]
    offset_x = (np.arange(shape[1])[None, :] - nearest[1]) * grid
    offset_y = (np.arange(shape[0])[:, None] - nearest[0]) * grid
    source[..., 0] += source[..., 1] * offset_x + source[..., 2] * offset_y
    known = fitted | (outline & ~occupied)  # a degenerate fit (a wall's thin strip) is no contact
    coef = np.where(fitted[..., None], coef, source)
    # The plantar rule on a height field: n_z < −0.5 is a slope² under 1 / n_z² − 1 = 3.
    steepest = 1.0 / PLANTAR_NZ**2 - 1.0
    plantar = known & outline & (coef[..., 1] ** 2 + coef[..., 2] ** 2 < steepest)
    # The raster cells of each grid cell, at their centres' offsets from its centre.
    offsets = (np.arange(per_cell) + 0.5) * RASTER_MM - grid / 2
    contact = np.zeros((per_cell * shape[0], per_cell * shape[1]), bool)
    for i, sx in enumerate(offsets):
        for j, sy in enumerate(offsets):
            height = coef[..., 0] + sx * coef[..., 1] + sy * coef[..., 2]
            contact[j::per_cell, i::per_cell] = plantar & (height <= CONTACT_MM)
    xs = x0 + (np.arange(contact.shape[1]) + 0.5) * RASTER_MM
    ys = y0 + (np.arange(contact.shape[0]) + 0.5) * RASTER_MM
    columns = (xs >= 0.0) & (xs <= 0.80 * length_mm)
    return _Footprint(xs=xs[columns], ys=ys, contact=contact[:, columns])


def _arch_index(fp: _Footprint) -> float | None:
    """Area of the middle third of the footprint's own length over its total area."""
    per_column = fp.contact.sum(axis=0)
    columns = np.flatnonzero(per_column)
    if len(columns) == 0:
        return None
    start, end = fp.xs[columns[0]] - RASTER_MM / 2, fp.xs[columns[-1]] + RASTER_MM / 2
    third = (end - start) / 3.0
    middle = (fp.xs >= start + third) & (fp.xs < start + 2 * third)
    return float(per_column[middle].sum() / per_column.sum())


def _thirds(fp: _Footprint) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-column footprint width, and masks of its heel, midfoot and forefoot length thirds."""
    width = fp.contact.sum(axis=0) * RASTER_MM
    columns = np.flatnonzero(width > 0)
    start, end = fp.xs[columns[0]] - RASTER_MM / 2, fp.xs[columns[-1]] + RASTER_MM / 2
    third = (end - start) / 3.0
    heel = (fp.xs >= start) & (fp.xs < start + third)
    mid = (fp.xs >= start + third) & (fp.xs < start + 2 * third)
    fore = (fp.xs >= start + 2 * third) & (fp.xs <= end)
    return width, heel, mid, fore


def _chippaux_staheli(fp: _Footprint) -> tuple[float | None, float | None]:
    """Chippaux-Smirak (min midfoot / max forefoot width) and Staheli (min midfoot / max heel)."""
    if not fp.contact.any():
        return None, None
    width, heel, mid, fore = _thirds(fp)
    narrowest = width[mid].min()
    return float(narrowest / width[fore].max()), float(narrowest / width[heel].max())


def _clarke_angle(fp: _Footprint) -> float | None:
    """Clarke's angle between the footprint's medial tangent and the line into its arch concavity.

    The tangent is the edge of the medial border's convex hull that spans the
    midfoot (touching the heel and the first metatarsal head region); the
    second line joins the tangent's forefoot point to the border point
    deepest inside the tangent.
    """
    from scipy.spatial import ConvexHull, QhullError

    if not fp.contact.any():
        return None
    columns = np.flatnonzero(fp.contact.any(axis=0))
    top = fp.contact.shape[0] - 1 - np.argmax(fp.contact[::-1, columns], axis=0)
    border = np.column_stack([fp.xs[columns], fp.ys[top]])  # medial border: max y per column
    mid = _thirds(fp)[2][columns]
    if not mid.any():
        return None
    try:
        hull = ConvexHull(border)
    except QhullError:
        return 0.0
    # Hull edges on the medial side (outward normal toward +y) spanning the whole midfoot.
    a, b = border[hull.simplices[:, 0]], border[hull.simplices[:, 1]]
    spans = (np.minimum(a[:, 0], b[:, 0]) <= border[mid, 0].min()) & (
        np.maximum(a[:, 0], b[:, 0]) >= border[mid, 0].max()) & (hull.equations[:, 1] > 0)
    if not spans.any():
        return 0.0  # the medial border bulges over the whole midfoot: no concavity
    k = int(np.flatnonzero(spans)[0])
    back, front = (a[k], b[k]) if a[k, 0] < b[k, 0] else (b[k], a[k])
    direction = (front - back) / np.linalg.norm(front - back)
    inward = np.array([direction[1], -direction[0]])  # toward −y, into the footprint
    depth = (border[mid] - back) @ inward
    if depth.max() <= 0:
        return 0.0
    to_arch = border[mid][np.argmax(depth)] - front
    cos = np.clip(-(to_arch @ direction) / np.linalg.norm(to_arch), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)))


def _heel_reach(points: np.ndarray, length_mm: float) -> float:
    """How high the heel surface (0–15 %FL) rises on its lower side: the lower of its two walls.

    A plantar scan's walls stop near the heel's widest point; each slice of
    the rearfoot line must cut both walls, so both must reach 35 mm.
    """
    x, y, z = points.T
    heel = x <= 0.15 * length_mm
    first = heel & (np.abs(z - HEEL_SLICES_MM[0]) <= 1.0)
    if not first.any():
        return float(z[heel].max(initial=0.0))
    middle = 0.5 * (y[first].max() + y[first].min())
    medial = z[heel & (y >= middle)].max(initial=0.0)
    lateral = z[heel & (y <= middle)].max(initial=0.0)
    return float(min(medial, lateral))


def _rearfoot_angle(points: np.ndarray, length_mm: float) -> float | None:
    """Lean of the heel slices' mid-points (y = a + b·z) over 0–15 %FL; atan(b) in degrees,
    positive = everted (the top leans medially).

    Each slice's extremes (max and min y at z = level) are read off the
    refined points within 1.5 mm of the level: per wall, the extreme of each
    0.5 mm sub-band, fitted linearly in z and taken at the level. A thin band
    would miss a wall on a sparse mesh; a thick one would read a wall that
    leans at the band's top or bottom, which tilts the line.
    """
    x, y, z = points.T
    heel = x <= 0.15 * length_mm
    mids = []
    for level in HEEL_SLICES_MM:
        band = heel & (np.abs(z - level) <= 1.5)
        if band.sum() < 2:
            return None
        middle = 0.5 * (y[band].max() + y[band].min())
        edges = []
        for sign in (1.0, -1.0):
            side = band & (sign * (y - middle) > 0)
            if not side.any():
                return None
            sub = np.floor((z[side] - level + 1.5) / 0.5).astype(np.int64)
            order = np.lexsort((-sign * y[side], sub))
            first = order[np.r_[True, np.diff(sub[order]) > 0]]  # each sub-band's extreme
            ye, ze = y[side][first], z[side][first]
            edges.append(np.polyval(np.polyfit(ze - level, ye, 1), 0.0) if len(ye) > 1 else ye[0])
        mids.append(0.5 * (edges[0] + edges[1]))
    slope = np.polyfit(HEEL_SLICES_MM, mids, 1)[0]
    return float(math.degrees(math.atan(slope)))


def measure(foot: Foot, *, loading: Loading = Loading.WEIGHT_BEARING, params: Params | None = None
            ) -> Measurements:
    """Measure a framed foot by the spec's definitions, classify it and check the scan's quality.

    ``loading`` is how the foot was loaded while scanned (footprint classes
    hold for weight-bearing scans only). A measurement the scan cannot give is
    None, with the reason in ``missing``.
    """
    from orthocad import params as params_module

    params = params or params_module.defaults()
    s = surface(foot)
    regions = _candidates(s, scan_kind=foot.scan_kind)
    refined = _refine(s, [v for k, v in vars(regions).items() if k != "long_axis"])
    tips = refined.take(regions.tips)
    hallux = refined.take(regions.hallux)
    x0 = float(tips[:, 0].min())
    length = float(tips[:, 0].max()) - x0
    shift = np.array([x0, 0.0, 0.0])  # measurements take x from the (refined) pternion

    def part(indices: np.ndarray) -> np.ndarray:
        return refined.take(indices) - shift

    values: dict[str, float | None] = dict.fromkeys(SPEC_FIELDS + EXTRA_FIELDS)
    missing: dict[str, str] = {}
    landmarks = {"pternion": tips[np.argmin(tips[:, 0])], "toe_tip": tips[np.argmax(tips[:, 0])],
                 "hallux_tip": hallux[np.argmax(hallux[:, :2] @ regions.long_axis)]}
    values["foot_length_mm"] = length
    ball, heel = part(regions.ball), part(regions.heel)
    values["ball_width_mm"] = _width(ball[_in(ball[:, 0], length, 0.55, 0.80), 1])
    heel = heel[_in(heel[:, 0], length, 0.10, 0.22) & (heel[:, 2] <= 30.0)]
    values["heel_width_mm"] = _width(heel[:, 1])
    outlines = (("truncated_length_mm", regions.medial_outline, True, "mth1"),
                ("fifth_met_x_mm", regions.lateral_outline, False, "mth5"))
    for name, indices, medial, mark in outlines:
        outline = part(indices)
        apex = _outline_apex(outline[:, 0], outline[:, 1], length, medial=medial)
        if apex is not None:
            values[name] = apex[0]
            landmarks[mark] = np.array([apex[0] + x0, apex[1], 0.0])
    if foot.scan_kind is ScanKind.FULL:
        top = part(regions.dorsum)
        top = top[np.abs(top[:, 0] - 0.5 * length) <= 2.0]
        if len(top):
            values["dorsal_height_mm"] = float(top[:, 2].max())
            if values["truncated_length_mm"]:
                values["arch_height_index"] = (values["dorsal_height_mm"]
                                               / values["truncated_length_mm"])
    else:
        missing["dorsal_height_mm"] = missing["arch_height_index"] = "plantar-only scan: no dorsum"
    wall = _arch_wall(s)
    arch = _medial_arch_height(s.points_mm[wall] - shift, s.normals[wall], length,
                               spacing_mm=s.spacing_mm)
    if arch is not None:
        values["medial_arch_height_mm"] = arch[0]
        values["medial_arch_apex_x_mm"] = arch[2]
        landmarks["arch_top"] = arch[1] + shift
    footprint = _footprint(s.points_mm - shift, s.normals, length, spacing_mm=s.spacing_mm)
    if footprint is not None and footprint.contact.any():
        values["arch_index"] = _arch_index(footprint)
        values["chippaux_smirak_index"], values["staheli_index"] = _chippaux_staheli(footprint)
        values["clarke_angle_deg"] = _clarke_angle(footprint)
    reach = _heel_reach(s.points_mm - shift, length)
    if reach > HEEL_SLICES_MM[-1] + 0.5:
        values["rearfoot_angle_deg"] = _rearfoot_angle(part(regions.rearfoot), length)
    else:
        missing["rearfoot_angle_deg"] = (
            f"the heel surface reaches {reach:.0f} mm on its lower side; the rearfoot line "
            f"needs both heel walls up to {HEEL_SLICES_MM[-1]:.0f} mm")
    for name, value in values.items():
        if value is None and name not in missing:
            missing[name] = "the scan has no surface where this is defined"
    return Measurements(
        side=foot.side, scan_kind=foot.scan_kind, loading=loading, **values,
        classification=classify(values, scan_kind=foot.scan_kind, loading=loading, params=params),
        quality=assess(s, limits=params.quality), missing=missing,
        landmarks_mm={k: tuple(float(c) for c in v) for k, v in landmarks.items()},
    )


def classify(values: dict[str, float | None], *, scan_kind: ScanKind, loading: Loading,
             params: Params) -> Classification:
    """Classify arch and rearfoot independently, saying which index decided and why.

    Arch precedence: the arch height index (AHI) wins over the arch index when
    both exist, because it was validated against radiographic arch height
    (Williams & McClay 2000) and does not depend on how far the plantar soft
    tissue spreads, which the footprint does; the arch index decides alone on
    plantar scans (no dorsum, no AHI). Footprint indices apply to
    weight-bearing scans only (spec): otherwise they are not applicable.
    """
    c = params.classification
    votes: dict[str, tuple[ArchType, str]] = {}
    ahi, ai = values.get("arch_height_index"), values.get("arch_index")
    if ahi is not None:
        votes["arch_height_index"] = _three_way(
            low=(ahi < c.ahi_low, f"AHI {ahi:.3f} < {c.ahi_low}"),
            high=(ahi > c.ahi_high, f"AHI {ahi:.3f} > {c.ahi_high}"),
            normal=f"{c.ahi_low} ≤ AHI {ahi:.3f} ≤ {c.ahi_high}")
    if ai is not None and loading is Loading.WEIGHT_BEARING:
        votes["arch_index"] = _three_way(
            low=(ai >= c.arch_index_low, f"arch index {ai:.3f} ≥ {c.arch_index_low}"),
            high=(ai <= c.arch_index_high, f"arch index {ai:.3f} ≤ {c.arch_index_high}"),
            normal=f"{c.arch_index_high} < arch index {ai:.3f} < {c.arch_index_low}")
    conflict = None
    if votes:
        driver = next(iter(votes))
        arch, arch_reason = votes[driver]
        if len({vote[0] for vote in votes.values()}) > 1:
            ai_class = votes["arch_index"][0].value
            conflict = (f"arch index says {ai_class}, AHI says {arch.value}: AHI wins "
                        "(validated against radiographs; footprints spread with soft tissue)")
    else:
        driver, arch = None, None
        arch_reason = "no arch measurement"
        if ai is not None:
            arch_reason = (f"footprint indices do not apply to a {loading.value} scan and a "
                           f"{scan_kind.value} scan has no AHI")
    angle = values.get("rearfoot_angle_deg")
    if angle is None:
        rearfoot, rf_driver, rf_reason = None, None, "rearfoot angle missing"
    else:
        rf_driver = "rearfoot_angle_deg"
        if angle > c.pronated_deg:
            rearfoot = RearfootType.PRONATED
            rf_reason = f"rearfoot angle {angle:+.1f}° > {c.pronated_deg:+.1f}°"
        elif angle < c.supinated_deg:
            rearfoot = RearfootType.SUPINATED
            rf_reason = f"rearfoot angle {angle:+.1f}° < {c.supinated_deg:+.1f}°"
        else:
            rearfoot = RearfootType.NEUTRAL
            rf_reason = (f"{c.supinated_deg:+.1f}° ≤ rearfoot angle {angle:+.1f}° "
                         f"≤ {c.pronated_deg:+.1f}°")
    return Classification(
        arch=arch, arch_driver=driver, arch_reason=arch_reason, arch_conflict=conflict,
        rearfoot=rearfoot, rearfoot_driver=rf_driver, rearfoot_reason=rf_reason,
    )


def _three_way(*, low: tuple[bool, str], high: tuple[bool, str], normal: str
               ) -> tuple[ArchType, str]:
    """The class whose condition holds (low first, then high, else normal), with its reason."""
    if low[0]:
        return ArchType.LOW, low[1]
    if high[0]:
        return ArchType.HIGH, high[1]
    return ArchType.NORMAL, normal


def measure_scan(
    scan: str | Path | Scan | Foot,
    *,
    side: Side = Side.AUTO,
    units: Units = Units.AUTO,
    loading: Loading = Loading.WEIGHT_BEARING,
    params: Params | None = None,
    force: bool = False,
) -> Measurements:
    """Measure one foot from a scan file, a read :class:`Scan` or a framed :class:`Foot`.

    This is ``orthocad.measure(...)``. A scan failing the quality gate raises
    :class:`~orthocad.errors.RejectedError` unless ``force``. A scan holding
    both feet needs ``side`` to pick one (``orthocad.pipeline.measure_scan``
    measures both).
    """
    from orthocad import pipeline
    from orthocad import scan as scan_module
    from orthocad.frame import Foot

    if isinstance(scan, Foot):
        return measure(scan, loading=loading, params=params)
    raw = scan if isinstance(scan, scan_module.Scan) else scan_module.read(scan, units=units)
    name = raw.source.name if raw.source else "scan"
    scans = pipeline.split_and_clean(raw)
    feet = pipeline.frame_feet(scans, side=side if len(scans) == 1 else Side.AUTO, name=name)
    if len(feet) > 1:
        if side is Side.AUTO:
            raise InputError(
                f"{name} holds two feet: pass side='left' or side='right' to measure one "
                "(orthocad.pipeline.measure_scan measures both)")
        feet = [foot for foot in feet if foot.side is side]
    [result] = pipeline.measure_feet(feet, loading=loading, params=params, force=force,
                                     name=name)
    return result


make_callable(__name__, "measure_scan")

