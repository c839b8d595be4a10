"""Surfaces of a framed foot: a Poisson mesh for views, the plantar height grid and outline.

:func:`mesh` reconstructs a watertight-ish triangle mesh from the points
(screened Poisson, open3d) for reports and 3D views; the insole is never
built from it (reconstructions are not reliably closed once trimmed).
:func:`plantar` gives what the insole is built from: the plantar surface seen
from below as a height grid over the footprint, the silhouette outline and
the contact region. Everything is in the canonical frame of
:mod:`orthocad.frame` (mm, +Y medial, z = 0 on the support plane).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orthocad.enums import ScanKind
from orthocad.frame import SILHOUETTE_TOP_MM, project_to_tangent_planes, silhouette

if TYPE_CHECKING:
    import trimesh

    from orthocad.frame import Foot

CONTACT_MM = 3.0  #: the footprint: plantar surface within this of the support plane (spec)
_NORMAL_RADIUS_MM = 4.0  # hybrid normal search: radius …
_NORMAL_NEIGHBOURS = 30  # … and at most this many neighbours
_LOWER_LAYER_MM = 2.5  # points this close above a cell's lowest point are its plantar layer
_ABOVE_SOLE_MM = 8.0  # a cell whose lowest point is this far above its surroundings' sees no sole


def mesh(foot: Foot, *, depth: int = 8, density_quantile: float = 0.02) -> trimesh.Trimesh:
    """A screened-Poisson surface of the foot in the canonical frame.

    The points are thinned to 1 mm voxels first (Poisson's cost grows with
    the points, its detail does not past the octree's resolution). Normals
    are the scan's own when it has them (a mesh's vertex normals are better
    than a fit), else fitted by open3d and oriented outward (see
    :func:`_orient_outward`). Poisson closes every opening (a plantar
    scan's open top, the ankle cut) with invented surface: vertices whose
    Poisson density is below the ``density_quantile`` quantile are dropped,
    and so are those further from every point than three point spacings
    (at least 3 mm), which the density alone leaves of a large cap. The
    result covers the scanned surface; it is not closed where the scan is
    open.
    """
    import trimesh

    from orthocad._native import open3d

    o3d = open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(foot.points_mm))
    if foot.normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(foot.normals)
    cloud = cloud.voxel_down_sample(1.0)
    points = np.asarray(cloud.points)
    if foot.normals is None:
        cloud.estimate_normals(
            o3d.geometry.KDTreeSearchParamHybrid(
                radius=_NORMAL_RADIUS_MM, max_nn=_NORMAL_NEIGHBOURS
            )
        )
        normals = _orient_outward(points, np.asarray(cloud.normals), scan_kind=foot.scan_kind)
    else:
        normals = np.asarray(cloud.normals)
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    cloud.normals = o3d.utility.Vector3dVector(normals)
    surface, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(cloud, depth=depth)
    density = np.asarray(density)
    far = _distance_to_cloud(np.asarray(surface.vertices), points) > _max_gap_mm(points)
    surface.remove_vertices_by_mask((density < np.quantile(density, density_quantile)) | far)
    return trimesh.Trimesh(
        vertices=np.asarray(surface.vertices), faces=np.asarray(surface.triangles), process=True
    )


def _distance_to_cloud(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(points).query(vertices, k=1, workers=-1)[0]


def _max_gap_mm(points: np.ndarray) -> float:
    """How far from every point a vertex may lie and still be surface the scan saw.

    Three median point spacings, at least 3 mm: the surface between the
    points, noise included, stays.
    """
    from scipy.spatial import cKDTree

    spacing = cKDTree(points).query(points[:: max(1, len(points) // 2000)], k=2)[0][:, 1]
    return max(3.0, 3.0 * float(np.median(spacing)))


def _orient_outward(points: np.ndarray, normals: np.ndarray, *, scan_kind: ScanKind) -> np.ndarray:
    """Flip fitted normals to point out of the foot.

    A ray from a point of a closed surface crosses the surface an odd
    number of times going inward and an even number going outward. Each
    point walks 4–40 mm both ways along its normal through a 2 mm occupancy
    grid of the points, counting the runs of occupied cells it meets; where
    exactly one way is odd, that way is inward. Elsewhere (a plantar scan's
    open top, the ankle cut, rays grazing a surface) the way that meets
    fewer occupied cells is outward; where both meet as many, the point
    falls back on a centre: across the foot, the middle of the y extent of
    its 2 mm slice of x; vertically the middle of that slice's z extent (for
    a plantar scan, whose inside lies above, 20 mm above its highest point,
    so the sole's normals come out downward and the walls' sideways); along
    the foot its own x pulled 15 mm in from the heel and toe tips, so the
    caps there point outward along x.
    """
    occupied, origin, voxel = _occupancy(points, voxel_mm=2.0)
    steps = np.arange(4.0, 40.1, 2.0)  # 2 mm steps through 2 mm cells: no shell is skipped

    def walk(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        runs = np.zeros(len(points), dtype=np.int64)
        hits = np.zeros(len(points), dtype=np.int64)
        before = np.zeros(len(points), dtype=bool)
        for step in steps:
            cell = np.floor((points + step * direction - origin) / voxel).astype(np.int64)
            inside = np.all((cell >= 0) & (cell < occupied.shape), axis=1)
            now = np.zeros(len(points), dtype=bool)
            now[inside] = occupied[cell[inside, 0], cell[inside, 1], cell[inside, 2]]
            runs += now & ~before
            hits += now
            before = now
        return runs % 2 == 1, hits

    odd_forward, hits_forward = walk(normals)
    odd_backward, hits_backward = walk(-normals)
    flip = odd_forward & ~odd_backward
    undecided = odd_forward == odd_backward
    flip[undecided] = hits_forward[undecided] > hits_backward[undecided]
    tie = undecided & (hits_forward == hits_backward)
    away = _away_from_centre(points[tie], scan_kind, reference=points)
    flip[tie] = np.einsum("ij,ij->i", normals[tie], away) < 0
    return np.where(flip[:, None], -normals, normals)


def _occupancy(points: np.ndarray, *, voxel_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    origin = points.min(axis=0) - voxel_mm
    cell = np.floor((points - origin) / voxel_mm).astype(np.int64)
    grid = np.zeros(cell.max(axis=0) + 2, dtype=bool)
    grid[cell[:, 0], cell[:, 1], cell[:, 2]] = True
    return grid, origin, voxel_mm


def _away_from_centre(
    points: np.ndarray, scan_kind: ScanKind, *, reference: np.ndarray
) -> np.ndarray:
    """Vectors from each point's centre of the foot (see :func:`_orient_outward`).

    The centres are those of the ``reference`` cloud's slices of x.
    """
    x0 = reference[:, 0].min()
    slab_of = np.floor((reference[:, 0] - x0) / 2.0).astype(np.int64)
    n = slab_of.max() + 1
    y_hi, y_lo = np.full(n, -np.inf), np.full(n, np.inf)
    z_hi, z_lo = np.full(n, -np.inf), np.full(n, np.inf)
    np.maximum.at(y_hi, slab_of, reference[:, 1])
    np.minimum.at(y_lo, slab_of, reference[:, 1])
    np.maximum.at(z_hi, slab_of, reference[:, 2])
    np.minimum.at(z_lo, slab_of, reference[:, 2])
    x, y, z = points.T
    slab = np.clip(np.floor((x - x0) / 2.0).astype(np.int64), 0, n - 1)
    centre_y = (y_hi[slab] + y_lo[slab]) / 2
    if scan_kind is ScanKind.FULL:
        centre_z = (z_hi[slab] + z_lo[slab]) / 2
    else:
        centre_z = np.full(len(points), reference[:, 2].max() + 20.0)
    x_lo, x_hi = x0, reference[:, 0].max()
    inset = min(15.0, (x_hi - x_lo) / 4)
    centre_x = np.clip(x, x_lo + inset, x_hi - inset)
    return np.column_stack([x - centre_x, y - centre_y, z - centre_z])


@dataclass(frozen=True, eq=False)
class Plantar:
    """The plantar surface seen from below, on a regular grid over the foot's silhouette.

    Sample ``[row, col]`` is at ``x = x0_mm + col·step_mm``, ``y = y0_mm + row·step_mm``.
    """

    x0_mm: float  #: x of column 0
    y0_mm: float  #: y of row 0
    step_mm: float
    z_mm: np.ndarray  #: (ny, nx) height of the plantar surface; NaN outside the silhouette
    outline_mm: np.ndarray  #: (K, 2) silhouette outline (x, y), counter-clockwise, last = first
    contact_mask: np.ndarray  #: (ny, nx) bool: plantar surface within 3 mm of z = 0

    @property
    def xs_mm(self) -> np.ndarray:
        return self.x0_mm + self.step_mm * np.arange(self.z_mm.shape[1])

    @property
    def ys_mm(self) -> np.ndarray:
        return self.y0_mm + self.step_mm * np.arange(self.z_mm.shape[0])

    def height_at(self, x_mm: np.ndarray, y_mm: np.ndarray) -> np.ndarray:
        """Bilinear height at (x, y) (any matching shapes); NaN outside the grid or the foot."""
        x = np.asarray(x_mm, dtype=np.float64)
        y = np.asarray(y_mm, dtype=np.float64)
        ny, nx = self.z_mm.shape
        u = (x - self.x0_mm) / self.step_mm
        v = (y - self.y0_mm) / self.step_mm
        inside = (u >= 0) & (u <= nx - 1) & (v >= 0) & (v <= ny - 1)
        i = np.clip(np.floor(u).astype(np.int64), 0, max(nx - 2, 0))
        j = np.clip(np.floor(v).astype(np.int64), 0, max(ny - 2, 0))
        fu = np.clip(u - i, 0.0, 1.0)
        fv = np.clip(v - j, 0.0, 1.0)
        i1 = np.minimum(i + 1, nx - 1)
        j1 = np.minimum(j + 1, ny - 1)
        z = self.z_mm
        value = (
            z[j, i] * (1 - fu) * (1 - fv)
            + z[j, i1] * fu * (1 - fv)
            + z[j1, i] * (1 - fu) * fv
            + z[j1, i1] * fu * fv
        )
        return np.where(inside, value, np.nan)


def plantar(foot: Foot, *, step_mm: float = 1.0) -> Plantar:
    """The plantar height grid, the silhouette outline and the contact region of a foot.

    * Silhouette: the points with z ≤ 40 mm rasterised at ``step_mm``,
      closed, holes filled (:func:`orthocad.frame.silhouette`).
    * Height: per cell, the mean z of the cell's plantar layer (its points
      within 2.5 mm of its lowest point), after projecting the points onto
      their local tangent planes to remove the noise. The mean of a layer,
      not its minimum: a minimum is biased low by noise and, on a slope,
      reports the cell's lowest corner instead of its centre. A cell whose
      lowest point is 8 mm above the lowest within two cells of it holds
      only dorsum (the sole's points there fell into the neighbours): no
      value.
    * Cells of the silhouette without plantar points are filled from their
      neighbours (:func:`_fill`).
    * Outline: the silhouette's boundary (contour at 0.5), moved in by half
      a cell (a cell is occupied when any point falls in it, so the
      occupied raster is half a cell too wide on average), lightly smoothed.
    """
    from scipy import ndimage

    points = np.asarray(foot.points_mm, dtype=np.float64)
    denoised = _denoise_lower(points)
    raster = silhouette(denoised[:, :2], denoised[:, 2], step_mm=step_mm)
    if raster is None:
        from orthocad.errors import NotAFootError

        raise NotAFootError(
            "the foot has no points within 40 mm of its support plane: no sole to map; "
            "check the scan holds the sole"
        )
    mask = raster.mask
    ny, nx = mask.shape
    x0 = raster.u0_mm + step_mm / 2
    y0 = raster.v0_mm + step_mm / 2
    col = np.floor((denoised[:, 0] - raster.u0_mm) / step_mm).astype(np.int64)
    row = np.floor((denoised[:, 1] - raster.v0_mm) / step_mm).astype(np.int64)
    ok = (row >= 0) & (row < ny) & (col >= 0) & (col < nx)
    flat = row[ok] * nx + col[ok]
    z = denoised[ok, 2]
    lowest = np.full(ny * nx, np.inf)
    np.minimum.at(lowest, flat, z)
    # A cell often holds no sole point but a point of the dorsum above it (about one point per
    # mm² on each). Such a cell's lowest point is far above the lowest within two cells of it,
    # further than any wall of the sole rises over 2 mm: it gets no value and is filled.
    nearby = ndimage.minimum_filter(lowest.reshape(ny, nx), size=5, mode="nearest").ravel()
    lowest[lowest > nearby + _ABOVE_SOLE_MM] = -np.inf
    layer = z <= lowest[flat] + _LOWER_LAYER_MM
    count = np.bincount(flat[layer], minlength=ny * nx)
    total = np.bincount(flat[layer], z[layer], minlength=ny * nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        height = (total / count).reshape(ny, nx)
    height = _fill(height, mask)
    height[~mask] = np.nan
    return Plantar(
        x0_mm=float(x0),
        y0_mm=float(y0),
        step_mm=float(step_mm),
        z_mm=height,
        outline_mm=_outline(mask, x0, y0, step_mm),
        contact_mask=mask & (np.nan_to_num(height, nan=np.inf) <= CONTACT_MM),
    )


def _denoise_lower(points: np.ndarray) -> np.ndarray:
    """The points with those up to 40 mm (all the plantar grid and outline use) denoised."""
    low = points[:, 2] <= SILHOUETTE_TOP_MM + 5.0
    out = points.copy()
    if low.sum() >= 20:
        out[low] = project_to_tangent_planes(points[low], points[low])[0]
    return out


def _fill(height: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill the silhouette's empty cells from their known neighbours, ring by ring.

    Each pass gives the empty cells next to known ones the mean of those
    (3 × 3); holes of a cell or two come out as linear interpolation. Not
    Delaunay-based interpolation: on the grid's cocircular points qhull can
    take minutes.
    """
    from scipy.ndimage import convolve

    filled = np.where(np.isfinite(height), height, 0.0)
    known = np.isfinite(height)
    kernel = np.ones((3, 3))
    while True:
        todo = mask & ~known
        if not todo.any():
            return np.where(known, filled, np.nan)
        total = convolve(np.where(known, filled, 0.0), kernel, mode="constant")
        count = convolve(known.astype(np.float64), kernel, mode="constant")
        ring = todo & (count > 0)
        if not ring.any():
            return np.where(known, filled, np.nan)
        filled[ring] = total[ring] / count[ring]
        known |= ring


def _outline(mask: np.ndarray, x0: float, y0: float, step: float) -> np.ndarray:
    """Counter-clockwise closed outline of the raster's boundary, in mm."""
    import contourpy
    import shapely

    padded = np.pad(mask.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, name="serial").lines(0.5)
    ring = max(lines, key=len)
    # Padded index (col, row) → mm: index 1 is sample 0.
    xy = np.column_stack([x0 + (ring[:, 0] - 1) * step, y0 + (ring[:, 1] - 1) * step])
    polygon = shapely.Polygon(xy).buffer(-step / 2, join_style="mitre")
    if polygon.geom_type == "MultiPolygon":
        polygon = max(polygon.geoms, key=lambda part: part.area)
    coords = np.asarray(polygon.exterior.coords)[:-1]
    # Light smoothing: the staircase of the raster, not the shape, goes away (±1 vertex).
    smooth = (np.roll(coords, 1, axis=0) + 2 * coords + np.roll(coords, -1, axis=0)) / 4
    polygon = shapely.polygons(np.vstack([smooth, smooth[:1]]))
    polygon = shapely.geometry.polygon.orient(polygon, sign=1.0)
    return np.asarray(polygon.exterior.coords)
