"""Scan-quality gate: can this scan support a device?

Bad scans are the main cause of remakes, so a scan is checked before anyone
builds from it: enough points on the sole, evenly spread (no region much
sparser than the rest), the sole covered without holes in the heel or the
arch (where the device must fit), and noise small enough for millimetre
measurements. Each check reports its value and limit; limits are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from orthocad.measure import Surface
    from orthocad.params import Quality as QualityParams

#: The regions checked for holes and sparse sampling, as fractions of foot length.
REGIONS = {"heel": (0.0, 0.25), "arch": (0.25, 0.60), "forefoot": (0.60, 1.0)}


@dataclass(frozen=True)
class Check:
    """One quality check: its measured value against its limit."""

    name: str
    passed: bool
    value: float
    limit: float
    unit: str
    message: str  #: why it failed and what to do, or what was found


@dataclass(frozen=True)
class Quality:
    """The verdict on a scan: every check, and whether it was overridden with --force."""

    checks: tuple[Check, ...]
    forced: bool = False

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [check.message for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "forced": self.forced,
            "reasons": self.reasons,
            "checks": {
                c.name: {"passed": c.passed, "value": round(c.value, 3), "limit": c.limit, "unit": c.unit}
                for c in self.checks
            },
        }


def assess(surface: Surface, *, limits: QualityParams) -> Quality:
    """Check a denoised, framed foot surface against the quality limits."""
    points, normals = surface.points_mm, surface.normals
    length = float(points[:, 0].max())
    low = points[:, 2] <= 40.0
    spacing = _median_spacing(points)
    cell = max(2.0, 2.0 * spacing)
    silhouette, origin = _raster(points[low, :2], cell=cell, fill=True)
    sole = _raster(points[low & (normals[:, 2] < 0.0), :2], cell=cell, origin=origin,
                   shape=silhouette.shape)[0]
    cell_x = origin[0] + (np.arange(silhouette.shape[1]) + 0.5) * cell
    area_cm2 = {name: silhouette[:, _cols(cell_x, length, span)].sum() * cell**2 / 100.0
                for name, span in REGIONS.items()}
    plantar = points[low & (normals[:, 2] < -0.5)]
    counts = {name: int(np.count_nonzero((plantar[:, 0] >= a * length) & (plantar[:, 0] <= b * length)))
              for name, (a, b) in REGIONS.items()}
    density = {name: counts[name] / max(area_cm2[name], 1e-9) for name in REGIONS}
    overall = sum(counts.values()) / max(sum(area_cm2.values()), 1e-9)
    sparsest = min(density, key=density.get)
    relative = density[sparsest] / overall
    coverage = float(sole[silhouette].mean()) if silhouette.any() else 0.0
    holes = _largest_holes(silhouette, sole, cell=cell, cell_x=cell_x, length=length)
    hole_region = max(("heel", "arch"), key=holes.get)

    checks = (
        Check("point_density", overall >= limits.min_density_per_cm2, overall,
              limits.min_density_per_cm2, "points/cm²",
              f"sole sampled at {overall:.0f} points/cm², below {limits.min_density_per_cm2:g}: "
              "rescan at a higher resolution"),
        Check("even_sampling", relative >= limits.min_relative_density, relative,
              limits.min_relative_density, "ratio",
              f"the {sparsest} region is sampled {1 / max(relative, 1e-9):.1f}x more sparsely than "
              "the sole on average: rescan it"),
        Check("sole_coverage", coverage >= limits.min_sole_coverage, coverage,
              limits.min_sole_coverage, "fraction",
              f"only {coverage:.0%} of the sole is covered by the scan: rescan the sole"),
        Check("holes", holes[hole_region] <= limits.max_hole_mm, holes[hole_region],
              limits.max_hole_mm, "mm",
              f"a {holes[hole_region]:.0f} mm hole in the {hole_region} region: rescan the "
              f"{hole_region} (holes up to {limits.max_hole_mm:g} mm are tolerated)"),
        Check("noise", surface.noise_mm <= limits.max_noise_mm, surface.noise_mm,
              limits.max_noise_mm, "mm",
              f"surface noise {surface.noise_mm:.1f} mm RMS exceeds {limits.max_noise_mm:g} mm: "
              "rescan with the foot still and the scanner calibrated"),
    )
    return Quality(checks=checks)


def _median_spacing(points: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    sample = points[:: max(1, len(points) // 5000)]
    distance, _ = cKDTree(points).query(sample, k=2)
    return float(np.median(distance[:, 1]))


def _raster(xy: np.ndarray, *, cell: float, origin=None, shape=None, fill: bool = False):
    """Occupancy raster of 2D points: (bool[row=y, col=x], origin xy)."""
    from scipy import ndimage

    if origin is None:
        origin = xy.min(axis=0) - cell
        shape = tuple((np.ceil((xy.max(axis=0) - origin) / cell).astype(int) + 2)[::-1])
    index = np.floor((xy - origin) / cell).astype(np.int64)
    keep = (index >= 0).all(axis=1) & (index[:, 0] < shape[1]) & (index[:, 1] < shape[0])
    grid = np.zeros(shape, dtype=bool)
    grid[index[keep, 1], index[keep, 0]] = True
    if fill:
        grid = ndimage.binary_fill_holes(ndimage.binary_closing(grid, iterations=2))
    return grid, origin


def _cols(cell_x: np.ndarray, length: float, span: tuple[float, float]) -> np.ndarray:
    return (cell_x >= span[0] * length) & (cell_x <= span[1] * length)


def _largest_holes(silhouette, sole, *, cell: float, cell_x, length: float) -> dict[str, float]:
    """Diameter (mm) of the largest empty disc in the sole, per region."""
    from scipy import ndimage

    inside = ndimage.binary_erosion(silhouette, iterations=1)
    empty = inside & ~sole
    radius = ndimage.distance_transform_edt(empty) * cell
    return {name: float(2.0 * radius[:, _cols(cell_x, length, span)].max(initial=0.0))
            for name, span in REGIONS.items()}
