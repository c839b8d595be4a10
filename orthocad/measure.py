"""Foot measurements by the spec's definitions, their classification, and the scan-quality verdict.

Every measurement follows ``docs/frame.md`` on a framed foot
(:class:`orthocad.frame.Foot`, canonical frame, mm). The definitions are
written for the true surface; a scan gives noisy points, and most
definitions take an extreme of them, which noise pushes outward (the
maximum of many points sits a few noise deviations out). So each
measurement is estimated where it is decided, and only there:

* Stray points go first: points with few others around them and, when
  cleaning found a floor, the floor's fringe left around the sole (floor
  points low beside the foot, outside the foot's outline seen from above).
* Every point gets a rough outward normal from a plane fitted on a 2 mm
  voxel summary: cheap, and enough to pick candidates and for the quality
  gate.
* The points near each extreme (toe tip and pternion, width extremes, the
  medial and lateral outlines, the top of the dorsum, the heel slices, the
  arch's medial wall) are moved onto a quadric fitted to their neighbours
  (second-order moving least squares: removes the noise along the normal
  without flattening tips and edges), which also gives their normal; the
  definition is then applied to those points.
* The medial arch height is the top of the plantar surface's medial third,
  which is where the medial wall's normal crosses n_z = −0.5. A threshold
  on noisy normals lets the maximum pick the worst point, so per 1 mm of x
  the refined normals' n_z is regressed on height and solved for −0.5,
  and the per-x heights are smoothed along x before the maximum is taken.
* The footprint is read from a lower-envelope height grid: the lowest
  layer of points in each 1 mm cell, a plane fitted over its 3 × 3 cells
  (height and slope, hence the plantar rule) evaluated on the 0.5 mm
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

Landmarks (``Measurements.landmarks_mm``) are in the foot's canonical frame
(``foot.to_scan`` maps them into the scan).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad.enums import ArchType, Loading, RearfootType, ScanKind, Side
from orthocad.quality import Quality, assess

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

    from orthocad.frame import Foot
    from orthocad.params import Params

#: The spec's measurement names, in report order.
SPEC_FIELDS = (
    "foot_length_mm", "ball_width_mm", "heel_width_mm", "truncated_length_mm", "fifth_met_x_mm",
    "dorsal_height_mm", "arch_height_index", "medial_arch_height_mm", "arch_index",
    "rearfoot_angle_deg",
)
#: Further footprint indices (see the module docstring for their definitions and sources).
EXTRA_FIELDS = ("chippaux_smirak_index", "staheli_index", "clarke_angle_deg")

CONTACT_MM = 3.0  #: footprint: plantar surface within this of the support plane (spec)
PLANTAR_NZ = -0.5  #: plantar surface: outward normal with n_z below this (spec)
HEEL_SLICES_MM = (10.0, 15.0, 20.0, 25.0, 30.0, 35.0)  #: rearfoot line (spec)
RASTER_MM = 0.5  #: footprint raster (frame.md)

_VOXEL_MM = 2.0  # summary voxels: rough normals and stray points
_ROUGH_NEIGHBOURS = 10  # voxels in a rough normal's plane fit
_FIT_NEIGHBOURS = 32  # points in a quadric fit: ≈ 3 mm radius at 1 mm spacing
_NEAR_MM = 4.0  # points this close to a raw extreme are refined: noise overshoots by less
_FRINGE_TOP_MM = 3.0  # floor-fringe points lie below this; the foot above it shows its outline
_GRID_MM = 1.0  # lower-envelope height grid
_LAYER_MM = 1.5  # a grid cell's lowest layer: within this of its lowest point (≈ 4 noise sigma)
_NZ_BAND = (-0.85, -0.15)  # the medial wall's normals regressed on height around −0.5


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
    """One foot's measurements. A value the scan cannot give is None, with a reason in ``missing``."""

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
    quality: Quality = field(default_factory=lambda: Quality(checks=()))  #: no checks: not assessed
    missing: dict[str, str] = field(default_factory=dict)
    #: Points the measurements rest on, in the foot's canonical frame (mm):
    #: ``toe_tip`` (max x: the tip of the longest toe), ``pternion`` (min x),
    #: ``mth1`` and ``mth5`` (outline apexes), ``arch_top`` (the medial arch height's point).
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
        out["landmarks_mm"] = {k: [round(float(c), 3) for c in v] for k, v in self.landmarks_mm.items()}
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


def _voxels(points: np.ndarray, size_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Each point's voxel (its row in the unique voxels) and the voxels' integer keys."""
    keys = np.floor((points - points.min(axis=0)) / size_mm).astype(np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return inverse.ravel(), unique


def _supported(points: np.ndarray) -> np.ndarray:
    """Points with enough others in their 6 mm block (3 × 3 × 3 voxels): not stray.

    "Enough" is a tenth of the typical block's count, so sparse scans and
    dense ones are judged alike; cleaning has removed most strays already,
    this catches the few it kept near the foot, which would set an extreme.
    """
    from scipy import ndimage

    inverse, keys = _voxels(points, _VOXEL_MM)
    counts = np.bincount(inverse).astype(np.float32)
    grid = np.zeros(tuple(keys.max(axis=0) + 1), np.float32)
    grid[tuple(keys.T)] = counts
    block = ndimage.uniform_filter(grid, size=3, mode="constant") * 27.0
    support = block[tuple(keys.T)][inverse]
    return support >= max(3.0, 0.1 * float(np.median(support)))


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
    """Outward unit normals of plane fits on 2 mm voxel means, one per voxel, given to its points."""
    from scipy.spatial import cKDTree

    inverse, _ = _voxels(points, _VOXEL_MM)
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


def _quadrics(query: np.ndarray, cloud: np.ndarray, tree: cKDTree, *, neighbours: int = _FIT_NEIGHBOURS
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    axes = np.linalg.eigh(np.einsum("nki,nkj->nij", centred, centred))[1]
    local = np.matmul(rel, axes)  # (normal, tangent, tangent) coordinates
    h, u, v = local[..., 0], local[..., 1], local[..., 2]
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=2)
    r2 = u * u + v * v
    weight = np.exp(-r2 / np.maximum(r2.mean(axis=1, keepdims=True), 1e-12))
    weighted = design * weight[..., None]
    normal_matrix = np.einsum("nka,nkb->nab", weighted, design) + 1e-9 * np.eye(6)
    coef = np.linalg.solve(normal_matrix, np.einsum("nka,nk->na", weighted, h)[..., None])[..., 0]
    residual = h - np.einsum("nka,na->nk", design, coef)
    rms = np.sqrt(np.sum(weight * residual**2, axis=1) / np.sum(weight, axis=1))
    normal, t1, t2 = axes[:, :, 0], axes[:, :, 1], axes[:, :, 2]
    projected = query + coef[:, :1] * normal
    normals = normal - coef[:, 1:2] * t1 - coef[:, 2:3] * t2
    return projected, normals / np.linalg.norm(normals, axis=1, keepdims=True), rms


@dataclass(frozen=True, eq=False)
class _Refined:
    """Refined (projected) points and oriented normals for a set of surface indices."""

    index: np.ndarray  #: sorted unique indices into the surface's points
    points: np.ndarray
    normals: np.ndarray

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.searchsorted(self.index, indices)
        return self.points[rows], self.normals[rows]


def _refine(s: Surface, candidates: list[np.ndarray]) -> _Refined:
    index = np.unique(np.concatenate(candidates))
    points, normals, _ = _quadrics(s.points_mm[index], s.points_mm, s.tree)
    flip = np.einsum("ni,ni->n", normals, s.normals[index]) < 0
    return _Refined(index=index, points=points, normals=np.where(flip[:, None], -normals, normals))


def _near_max(values: np.ndarray, mask: np.ndarray, margin: float = _NEAR_MM) -> np.ndarray:
    """Indices of the masked points within ``margin`` of the masked maximum."""
    where = np.flatnonzero(mask)
    if len(where) == 0:
        return where
    return where[values[where] >= values[where].max() - margin]


def _per_bin_near_max(bins: np.ndarray, values: np.ndarray, mask: np.ndarray, margin: float) -> np.ndarray:
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
    """Candidate point indices per measurement, chosen on the raw points."""

    tips: np.ndarray
    ball: np.ndarray
    heel: np.ndarray
    medial_outline: np.ndarray
    lateral_outline: np.ndarray
    dorsum: np.ndarray
    rearfoot: np.ndarray
    arch_wall: np.ndarray


def _candidates(s: Surface, *, scan_kind: ScanKind) -> _Regions:
    x, y, z = s.points_mm.T
    x = x - x.min()
    fl = float(x.max())
    everywhere = np.ones(len(x), bool)

    def span(lo: float, hi: float, pad: float = _NEAR_MM) -> np.ndarray:
        return (x >= lo * fl - pad) & (x <= hi * fl + pad)

    ball, heel = span(0.55, 0.80), span(0.10, 0.22) & (z <= 30.0 + _NEAR_MM)
    outline = span(0.50, 0.85)
    bins = np.floor(x).astype(np.int64)
    rearfoot = []
    if scan_kind is ScanKind.FULL or z[x <= 0.15 * fl].max(initial=0.0) > HEEL_SLICES_MM[-1]:
        for level in HEEL_SLICES_MM:
            band = span(0.0, 0.15) & (np.abs(z - level) <= 1.5)
            rearfoot += [_near_max(y, band, 2.0), _near_max(-y, band, 2.0)]
    arch = span(0.25, 0.65, 2.0) & (s.normals[:, 1] > 0.0)
    arch &= (s.normals[:, 2] > -0.97) & (s.normals[:, 2] < -0.03)
    return _Regions(
        tips=np.concatenate([_near_max(x, everywhere), _near_max(-x, everywhere)]),
        ball=np.concatenate([_near_max(y, ball), _near_max(-y, ball)]),
        heel=np.concatenate([_near_max(y, heel), _near_max(-y, heel)]),
        medial_outline=_per_bin_near_max(bins, y, outline, 2.5),
        lateral_outline=_per_bin_near_max(bins, -y, outline, 2.5),
        dorsum=_near_max(z, np.abs(x - 0.5 * fl) <= 2.0 + _NEAR_MM) if scan_kind is ScanKind.FULL
        else np.zeros(0, np.int64),
        rearfoot=np.concatenate(rearfoot) if rearfoot else np.zeros(0, np.int64),
        arch_wall=np.flatnonzero(arch),
    )


def _in(x: np.ndarray, length_mm: float, lo_pct: float, hi_pct: float) -> np.ndarray:
    return (x >= lo_pct * length_mm) & (x <= hi_pct * length_mm)


def _width(y: np.ndarray) -> float | None:
    return float(y.max() - y.min()) if len(y) else None


def _outline_apex(x: np.ndarray, y: np.ndarray, length_mm: float, *, medial: bool
                  ) -> tuple[float, float] | None:
    """x (and the outline's y there) of the smoothed medial (max y) or lateral (min y) outline's
    extreme in 55–80 %FL (1 mm bins from the pternion, moving average over ±5 mm)."""
    signed = y if medial else -y
    bins = np.floor(x).astype(np.int64)
    ok = bins >= 0
    bins, signed = bins[ok], signed[ok]
    n_bins = int(math.ceil(0.85 * length_mm)) + 7
    keep = bins < n_bins
    edge = np.full(n_bins, -np.inf)
    np.maximum.at(edge, bins[keep], signed[keep])
    centres = np.arange(n_bins) + 0.5
    known = np.isfinite(edge)
    if known.sum() < 11:
        return None
    edge = np.interp(centres, centres[known], edge[known])
    smooth = np.convolve(edge, np.ones(11) / 11.0, mode="same")  # ±5 mm of x
    region = np.flatnonzero(_in(centres, length_mm, 0.55, 0.80))
    if len(region) == 0:
        return None
    best = region[np.argmax(smooth[region])]
    offset = _parabola_offset(smooth, best)
    value = float(smooth[best])
    return float(centres[best] + offset), value if medial else -value


def _parabola_offset(values: np.ndarray, i: int) -> float:
    """Sub-bin position of a discrete maximum (vertex of the parabola through 3 bins)."""
    if i <= 0 or i >= len(values) - 1:
        return 0.0
    left, mid, right = values[i - 1], values[i], values[i + 1]
    curvature = left - 2 * mid + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def _medial_arch_height(points: np.ndarray, normals: np.ndarray, length_mm: float
                        ) -> tuple[float, np.ndarray] | None:
    """Top of the plantar surface's medial third over 25–65 %FL, and where it is.

    Along the arch's medial wall the outward normal turns from down (the
    sole, n_z = −1) toward horizontal as the wall rises, so the top of the
    plantar surface (n_z < −0.5) in a 1 mm slice of x is the height where the
    wall's n_z crosses −0.5. Per slice, n_z is fitted linearly in z over the
    wall's points with n_z in −0.85…−0.15, and solved for −0.5; a slice whose
    points do not straddle −0.5 (a sole meeting the wall in a crease steeper
    than the limit) takes its highest plantar point instead. The per-slice
    heights are smoothed over ±2 mm of x before the maximum.
    """
    x, z, nz = points[:, 0], points[:, 2], normals[:, 2]
    inside = _in(x, length_mm, 0.25, 0.65)
    if inside.sum() < 10:
        return None
    x, z, nz, points = x[inside], z[inside], nz[inside], points[inside]
    b = np.floor(x - 0.25 * length_mm).astype(np.int64)
    n_bins = int(b.max()) + 1
    band = (nz > _NZ_BAND[0]) & (nz < _NZ_BAND[1])

    def sums(values: np.ndarray) -> np.ndarray:
        return np.bincount(b[band], values[band], minlength=n_bins)

    n, sz, szz, sn, szn = sums(np.ones_like(z)), sums(z), sums(z * z), sums(nz), sums(z * nz)
    below = np.bincount(b[band & (nz < PLANTAR_NZ)], minlength=n_bins)
    above = np.bincount(b[band & (nz >= PLANTAR_NZ)], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = szz - sz * sz / n
        slope = (szn - sz * sn / n) / var
        crossing = (sz + (PLANTAR_NZ - sn / n) / slope * n) / n
    plantar = nz < PLANTAR_NZ
    top = np.full(n_bins, -np.inf)
    np.maximum.at(top, b[plantar], z[plantar])
    straddles = (below >= 2) & (above >= 2) & (slope > 0) & np.isfinite(crossing)
    height = np.where(straddles, crossing, top)
    valid = np.isfinite(height)
    if not valid.any():
        return None
    kernel = np.ones(5)
    weight = np.convolve(valid.astype(float), kernel, mode="same")
    smooth = np.convolve(np.where(valid, height, 0.0), kernel, mode="same") / np.maximum(weight, 1)
    smooth[~valid] = -np.inf
    best = int(np.argmax(smooth))
    near = b == best
    y_top = float(points[near, 1].max()) if near.any() else float(points[:, 1].max())
    return float(smooth[best]), np.array([0.25 * length_mm + best + 0.5, y_top, smooth[best]])


@dataclass(frozen=True, eq=False)
class _Footprint:
    """The contact raster over 0–80 %FL: where the plantar surface is within 3 mm of the plane."""

    xs: np.ndarray  #: x of the raster columns (from the pternion)
    ys: np.ndarray  #: y of its rows
    contact: np.ndarray  #: bool [row, column]


def _footprint(points: np.ndarray, length_mm: float) -> _Footprint | None:
    """Rasterise the footprint from a denoised lower-envelope height grid.

    1 mm cells; each cell's lowest layer (points within 1.5 mm of its lowest
    one); a plane fitted by least squares to the layers of its 3 × 3 cells
    gives the surface's height and slope there, evaluated at the centres of
    the cell's four 0.5 mm raster cells. Contact: an occupied cell, the
    plane within 3 mm of z = 0 and plantar (slope under 60°, n_z < −0.5).
    """
    from scipy import ndimage

    keep = (points[:, 2] <= CONTACT_MM + 8.0) & (points[:, 0] >= -_GRID_MM) & (
        points[:, 0] <= 0.80 * length_mm + 2 * _GRID_MM)
    if keep.sum() < 100:
        return None
    p = points[keep]
    y0 = math.floor(p[:, 1].min()) - _GRID_MM
    col = np.floor(p[:, 0] / _GRID_MM).astype(np.int64) + 1  # column 0 is x in [-1, 0)
    row = np.floor((p[:, 1] - y0) / _GRID_MM).astype(np.int64)
    shape = (int(row.max()) + 2, int(col.max()) + 2)
    flat = row * shape[1] + col
    lowest = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(lowest, flat, p[:, 2])
    layer = p[:, 2] <= lowest[flat] + _LAYER_MM
    p, flat = p[layer], flat[layer]
    # Coordinates about each cell's own centre keep the sums well conditioned.
    cx = (flat % shape[1] - 1 + 0.5) * _GRID_MM
    cy = y0 + (flat // shape[1] + 0.5) * _GRID_MM
    dx, dy, h = p[:, 0] - cx, p[:, 1] - cy, p[:, 2]
    size = shape[0] * shape[1]
    moments = {}
    for name, value in (("1", np.ones_like(h)), ("x", dx), ("y", dy), ("z", h), ("xx", dx * dx),
                        ("xy", dx * dy), ("yy", dy * dy), ("xz", dx * h), ("yz", dy * h)):
        moments[name] = np.bincount(flat, value, minlength=size).reshape(shape)
    occupied = moments["1"] > 0
    # Sum the 3 × 3 neighbours, each shifted to the centre cell's coordinates
    # (a neighbour at offset (i, j) cells has its points at dx + i, dy + j).
    total = dict.fromkeys(moments, 0.0)
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            m = {k: ndimage.shift(v, (-j, -i), order=0, mode="constant") for k, v in moments.items()}
            sx, sy = i * _GRID_MM, j * _GRID_MM
            total["1"] = total["1"] + m["1"]
            total["x"] = total["x"] + m["x"] + sx * m["1"]
            total["y"] = total["y"] + m["y"] + sy * m["1"]
            total["z"] = total["z"] + m["z"]
            total["xx"] = total["xx"] + m["xx"] + 2 * sx * m["x"] + sx * sx * m["1"]
            total["yy"] = total["yy"] + m["yy"] + 2 * sy * m["y"] + sy * sy * m["1"]
            total["xy"] = total["xy"] + m["xy"] + sx * m["y"] + sy * m["x"] + sx * sy * m["1"]
            total["xz"] = total["xz"] + m["xz"] + sx * m["z"]
            total["yz"] = total["yz"] + m["yz"] + sy * m["z"]
    t = total
    a = np.stack([np.stack([t["1"], t["x"], t["y"]], -1), np.stack([t["x"], t["xx"], t["xy"]], -1),
                  np.stack([t["y"], t["xy"], t["yy"]], -1)], -2)
    rhs = np.stack([t["z"], t["xz"], t["yz"]], -1)
    solvable = occupied & (t["1"] >= 3) & (np.abs(np.linalg.det(a)) > 1e-9)
    coef = np.zeros(shape + (3,))
    coef[solvable] = np.linalg.solve(a[solvable], rhs[solvable][..., None])[..., 0]
    plantar = solvable & (coef[..., 1] ** 2 + coef[..., 2] ** 2 < 3.0)  # n_z < −0.5
    # The four 0.5 mm raster cells of each grid cell, at ±0.25 mm from its centre.
    half = RASTER_MM / 2
    contact = np.zeros((2 * shape[0], 2 * shape[1]), bool)
    for i, sx in enumerate((-half, half)):
        for j, sy in enumerate((-half, half)):
            height = coef[..., 0] + sx * coef[..., 1] + sy * coef[..., 2]
            contact[j::2, i::2] = plantar & (height <= CONTACT_MM)
    xs = (np.arange(2 * shape[1]) + 0.5) * RASTER_MM - _GRID_MM
    ys = y0 + (np.arange(2 * shape[0]) + 0.5) * RASTER_MM
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
    return float(min(z[heel & (y >= middle)].max(initial=0.0), z[heel & (y <= middle)].max(initial=0.0)))


def _rearfoot_angle(points: np.ndarray, length_mm: float) -> float | None:
    """Lean of the heel slices' mid-points (y = a + b·z); atan(b) in degrees, + = everted."""
    x, y, z = points.T
    heel = x <= 0.15 * length_mm
    mids = []
    for level in HEEL_SLICES_MM:
        band = heel & (np.abs(z - level) <= 0.5)
        if band.sum() < 2:
            return None
        mids.append((y[band].max() + y[band].min()) / 2.0)
    slope = np.polyfit(HEEL_SLICES_MM, mids, 1)[0]
    return float(math.degrees(math.atan(slope)))


def measure(foot: Foot, *, loading: Loading = Loading.WEIGHT_BEARING, params: Params | None = None
            ) -> Measurements:
    """Measure a framed foot by the spec's definitions, classify it and check the scan's quality."""
    from orthocad import params as params_module

    params = params or params_module.defaults()
    s = surface(foot)
    regions = _candidates(s, scan_kind=foot.scan_kind)
    refined = _refine(s, [np.asarray(c, np.int64) for c in vars(regions).values()])

    tips, _ = refined.take(regions.tips)
    x0 = float(tips[:, 0].min())
    length = float(tips[:, 0].max()) - x0
    shift = np.array([x0, 0.0, 0.0])

    def part(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points, normals = refined.take(indices)
        return points - shift, normals

    missing: dict[str, str] = {}
    values: dict[str, float | None] = dict.fromkeys(SPEC_FIELDS + EXTRA_FIELDS)
    landmarks = {"pternion": tips[np.argmin(tips[:, 0])], "toe_tip": tips[np.argmax(tips[:, 0])]}
    values["foot_length_mm"] = length
    ball, _ = part(regions.ball)
    values["ball_width_mm"] = _width(ball[_in(ball[:, 0], length, 0.55, 0.80), 1])
    heel, _ = part(regions.heel)
    values["heel_width_mm"] = _width(heel[_in(heel[:, 0], length, 0.10, 0.22) & (heel[:, 2] <= 30.0), 1])
    for name, indices, medial, mark in (("truncated_length_mm", regions.medial_outline, True, "mth1"),
                                        ("fifth_met_x_mm", regions.lateral_outline, False, "mth5")):
        outline, _ = part(indices)
        apex = _outline_apex(outline[:, 0], outline[:, 1], length, medial=medial)
        if apex is not None:
            values[name] = apex[0]
            landmarks[mark] = np.array([apex[0] + x0, apex[1], 0.0])
    if foot.scan_kind is ScanKind.FULL:
        top, _ = part(regions.dorsum)
        top = top[np.abs(top[:, 0] - 0.5 * length) <= 2.0]
        if len(top):
            values["dorsal_height_mm"] = float(top[:, 2].max())
        if values["dorsal_height_mm"] is not None and values["truncated_length_mm"]:
            values["arch_height_index"] = values["dorsal_height_mm"] / values["truncated_length_mm"]
    else:
        reason = "plantar-only scan: no dorsum"
        missing["dorsal_height_mm"] = missing["arch_height_index"] = reason
    wall, wall_normals = part(regions.arch_wall)
    arch = _medial_arch_height(wall, wall_normals, length)
    if arch is not None:
        values["medial_arch_height_mm"] = arch[0]
        landmarks["arch_top"] = arch[1] + shift
    footprint = _footprint(s.points_mm - shift, length)
    if footprint is not None and footprint.contact.any():
        values["arch_index"] = _arch_index(footprint)
        values["chippaux_smirak_index"], values["staheli_index"] = _chippaux_staheli(footprint)
        values["clarke_angle_deg"] = _clarke_angle(footprint)
    reach = _heel_reach(s.points_mm - shift, length)
    if reach >= HEEL_SLICES_MM[-1] + 1.0:
        heel_slices, _ = part(regions.rearfoot)
        values["rearfoot_angle_deg"] = _rearfoot_angle(heel_slices, length)
    else:
        missing["rearfoot_angle_deg"] = (
            f"the heel surface reaches {reach:.0f} mm on its lower side; "
            f"the rearfoot line needs both heel walls up to {HEEL_SLICES_MM[-1]:.0f} mm"
        )
    for name, value in values.items():
        if value is None and name not in missing:
            missing[name] = "the scan has no surface where this is defined"
    classification = classify(values, scan_kind=foot.scan_kind, loading=loading, params=params)
    return Measurements(
        side=foot.side, scan_kind=foot.scan_kind, loading=loading, **values,
        classification=classification, quality=assess(s, limits=params.quality), missing=missing,
        landmarks_mm={k: tuple(float(c) for c in v) for k, v in landmarks.items()},
    )


def classify(values: dict[str, float | None], *, scan_kind: ScanKind, loading: Loading, params: Params
             ) -> Classification:
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
        arch_reason = (f"footprint indices do not apply to a {loading.value} scan and a "
                       f"{scan_kind.value} scan has no AHI" if ai is not None else "no arch measurement")
    angle = values.get("rearfoot_angle_deg")
    if angle is None:
        rearfoot, rf_driver, rf_reason = None, None, "rearfoot angle missing"
    else:
        rf_driver = "rearfoot_angle_deg"
        if angle > c.pronated_deg:
            rearfoot, rf_reason = RearfootType.PRONATED, f"rearfoot angle {angle:+.1f}° > {c.pronated_deg:+.1f}°"
        elif angle < c.supinated_deg:
            rearfoot, rf_reason = RearfootType.SUPINATED, f"rearfoot angle {angle:+.1f}° < {c.supinated_deg:+.1f}°"
        else:
            rearfoot = RearfootType.NEUTRAL
            rf_reason = f"{c.supinated_deg:+.1f}° ≤ rearfoot angle {angle:+.1f}° ≤ {c.pronated_deg:+.1f}°"
    return Classification(
        arch=arch, arch_driver=driver, arch_reason=arch_reason, arch_conflict=conflict,
        rearfoot=rearfoot, rearfoot_driver=rf_driver, rearfoot_reason=rf_reason,
    )


def _three_way(*, low: tuple[bool, str], high: tuple[bool, str], normal: str) -> tuple[ArchType, str]:
    if low[0]:
        return ArchType.LOW, low[1]
    if high[0]:
        return ArchType.HIGH, high[1]
    return ArchType.NORMAL, normal
