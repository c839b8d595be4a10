"""Scan-quality gate: can this scan support a device?

Bad scans are the main cause of remakes, so a scan is checked before anyone
builds from it. Each check reports its value and its limit (limits are
parameters, ``params.quality``), and a failed check says what to rescan:

* ``point_density``: plantar points (facing down, n_z < −0.5) per cm² of the
  footprint (the foot's outline seen from above, up to 40 mm);
* ``even_sampling``: the sparsest region's plantar density (heel 0–25 %FL,
  arch 25–60 %FL, forefoot 60–100 %FL) over the whole sole's: a region
  scanned much more sparsely than the rest loses its shape;
* ``sole_coverage``: the share of the outline that has sole surface (points
  facing down) within 2 mm, or two point spacings on a sparse scan;
* ``holes``: the diameter of the largest disc inside the outline (3 mm in
  from it) in the heel or the arch region without sole surface, where the
  device must fit;
* ``noise``: the RMS distance of the points from local quadric fits
  (median over a sample; :func:`orthocad.measure.surface`).

Distances, not raster occupancy, decide coverage and holes, so a sparse but
even scan (a plantar scanner's 6,000-vertex mesh) is judged by its gaps, not
by its resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from orthocad.measure import Surface
    from orthocad.params import Quality as QualityParams

#: The regions compared for even sampling, as fractions of foot length.
REGIONS = {"heel": (0.0, 0.25), "arch": (0.25, 0.60), "forefoot": (0.60, 1.0)}
#: The regions checked for holes: where the device must fit.
HOLE_REGIONS = ("heel", "arch")
OUTLINE_TOP_MM = 40.0  #: the outline (footprint) is the foot up to this height
PLANTAR_NZ = -0.5  #: plantar surface: outward normal with n_z below this (spec)

_CELL_MM = 1.0  # raster of the outline and of the distances to the sole
_RIM_MM = 3.0  # holes are looked for this far inside the outline (its rim is wall, not sole)


@dataclass(frozen=True)
class Check:
    """One quality check: its measured value against its limit."""

    name: str
    passed: bool
    value: float
    limit: float
    unit: str
    message: str  #: why it failed and what to do, or what was found

    def __post_init__(self) -> None:
        # Plain Python values (not numpy scalars): the verdict goes into JSON.
        object.__setattr__(self, "passed", bool(self.passed))
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "limit", float(self.limit))


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
                c.name: {"passed": c.passed, "value": round(c.value, 3), "limit": c.limit,
                         "unit": c.unit}
                for c in self.checks
            },
        }


def assess(surface: Surface, *, limits: QualityParams) -> Quality:
    """Check a framed foot's surface (stray points removed, rough normals) against the limits."""
    from scipy import ndimage

    points = surface.points_mm - [surface.points_mm[:, 0].min(), 0.0, 0.0]
    length = float(points[:, 0].max())
    low = points[:, 2] <= OUTLINE_TOP_MM
    facing_down = low & (surface.normals[:, 2] < 0.0)
    plantar = low & (surface.normals[:, 2] < PLANTAR_NZ)

    outline, origin = _outline(points[low, :2], spacing_mm=surface.spacing_mm)
    cell_x = origin[0] + (np.arange(outline.shape[0]) + 0.5) * _CELL_MM
    sole = np.zeros(outline.shape, bool)
    sole[tuple(_cells(points[facing_down, :2], origin, outline.shape).T)] = True
    gap = ndimage.distance_transform_edt(~sole) * _CELL_MM  # mm from each cell to the sole

    area_cm2 = {name: outline[_columns(cell_x, length, span)].sum() * _CELL_MM**2 / 100.0
                for name, span in REGIONS.items()}
    x = points[plantar, 0]
    counts = {name: np.count_nonzero((x >= a * length) & (x < b * length))
              for name, (a, b) in REGIONS.items()}
    density = {name: counts[name] / max(area_cm2[name], 1e-9) for name in REGIONS}
    overall = sum(counts.values()) / max(sum(area_cm2.values()), 1e-9)
    sparsest = min(density, key=density.get)
    relative = density[sparsest] / max(overall, 1e-9)
    reach = max(2.0, 2.0 * surface.spacing_mm)
    coverage = float(np.mean(gap[outline] <= reach)) if outline.any() else 0.0
    inside = ndimage.binary_erosion(outline, iterations=int(round(_RIM_MM / _CELL_MM)))
    holes = {}
    for name in HOLE_REGIONS:
        columns = _columns(cell_x, length, REGIONS[name])
        holes[name] = 2.0 * float(gap[columns][inside[columns]].max(initial=0.0))
    hole_region = max(HOLE_REGIONS, key=holes.get)

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
              f"only {coverage:.0%} of the footprint has sole surface: rescan the sole"),
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


def _cells(xy: np.ndarray, origin: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Raster cells [x index, y index] of 2D points, clipped to the raster."""
    return np.clip(np.floor((xy - origin) / _CELL_MM).astype(np.int64), 0, np.array(shape) - 1)


def _outline(xy: np.ndarray, *, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The foot seen from above: occupied cells, closed over the point spacing, holes filled.

    Returns the raster [x index, y index] and its origin (mm).
    """
    from scipy import ndimage

    bridge = int(np.ceil(2.0 * spacing_mm / _CELL_MM))  # closes the gaps between samples
    origin = xy.min(axis=0) - (bridge + 2) * _CELL_MM
    shape = tuple(np.ceil((xy.max(axis=0) - origin) / _CELL_MM).astype(np.int64) + bridge + 3)
    grid = np.zeros(shape, bool)
    grid[tuple(_cells(xy, origin, shape).T)] = True
    grid = ndimage.binary_closing(grid, iterations=bridge)
    return ndimage.binary_fill_holes(grid), origin


def _columns(cell_x: np.ndarray, length: float, span: tuple[float, float]) -> np.ndarray:
    return (cell_x >= span[0] * length) & (cell_x < span[1] * length)
