"""Tests of the scan-quality gate (orthocad.quality): each defect has its own reason,
good scans (synthetic and real) pass, the limits are parameters, --force marks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orthocad import frame, measure, params, pipeline, scan, synthetic
from orthocad.enums import ScanKind
from orthocad.errors import RejectedError
from orthocad.synthetic import FootShape

SCANS = Path(__file__).resolve().parents[1] / "scans"
SHAPE = FootShape()
FL = SHAPE.foot_length_mm


def good_points(shape: FootShape = SHAPE, *, noise_mm: float = 0.5) -> np.ndarray:
    """A scan at the spec's conditions: 200k points, noise, 1 % outliers (canonical pose)."""
    return synthetic.synth_scan(shape, n_points=200_000, noise_mm=noise_mm,
                                outlier_fraction=0.01, seed=1).points


def failing(points: np.ndarray, **kwargs) -> set[str]:
    """The checks a scan fails, through the pipeline (cleaning, framing) with --force."""
    [result] = pipeline.measure_scan(scan.from_points(points), force=True, **kwargs)
    assert result.quality.forced == (not result.quality.passed)
    return {c.name for c in result.quality.checks if not c.passed}


def quality_without_cleaning(points: np.ndarray):
    foot = frame.canonical(scan.from_points(points))
    return measure.measure(foot).quality


@pytest.mark.parametrize("kind", [ScanKind.FULL, ScanKind.PLANTAR])
def test_a_good_scan_passes(kind):
    [result] = pipeline.measure_scan(scan.from_points(good_points(FootShape(scan_kind=kind))))
    assert result.quality.passed and not result.quality.forced
    assert result.quality.reasons == []
    values = {c.name: c.value for c in result.quality.checks}
    assert values["noise"] < 0.7  # 0.5 mm of scanner noise, measured so
    assert values["holes"] < 5.0 and values["sole_coverage"] > 0.97
    assert values["even_sampling"] > 0.7


@pytest.mark.parametrize("kind", [ScanKind.FULL, ScanKind.PLANTAR])
def test_a_20_mm_hole_in_the_heel_is_rejected_for_its_hole(kind):
    points = good_points(FootShape(scan_kind=kind))
    hole = (np.hypot(points[:, 0] - 0.12 * FL, points[:, 1]) < 10.0) & (points[:, 2] < 20.0)
    with pytest.raises(RejectedError, match="mm hole in the heel region"):
        pipeline.measure_scan(scan.from_points(points[~hole]))
    assert failing(points[~hole]) == {"holes"}
    [result] = pipeline.measure_scan(scan.from_points(points[~hole]), force=True)
    [check] = [c for c in result.quality.checks if c.name == "holes"]
    assert 15.0 <= check.value <= 21.0


def test_a_10x_sparser_arch_is_rejected_for_its_sparse_sampling():
    points = good_points()
    arch = (points[:, 0] > 0.27 * FL) & (points[:, 0] < 0.58 * FL) & (points[:, 2] < 30.0)
    thinned = points[~(arch & (np.random.default_rng(0).random(len(points)) < 0.9))]
    # The gate on the scan as sampled: the sparse arch is its only fault.
    quality = quality_without_cleaning(thinned)
    assert {c.name for c in quality.checks if not c.passed} == {"even_sampling"}
    assert "the arch region is sampled" in quality.reasons[0]
    # Through the pipeline the scan is rejected for it too (cleaning's outlier
    # removal also drops most of the sparse points, which then leaves a hole).
    with pytest.raises(RejectedError, match="the arch region is sampled"):
        pipeline.measure_scan(scan.from_points(thinned))


@pytest.mark.parametrize("kind", [ScanKind.FULL, ScanKind.PLANTAR])
def test_3_mm_noise_is_rejected_for_its_noise(kind):
    points = good_points(FootShape(scan_kind=kind), noise_mm=3.0)
    with pytest.raises(RejectedError, match="surface noise .* exceeds"):
        pipeline.measure_scan(scan.from_points(points))
    assert failing(points) == {"noise"}


@pytest.mark.parametrize("name", ["techmed3d_plantar_right.obj", "find_template_left.obj"])
def test_the_real_scans_pass(name):
    [result] = pipeline.measure_scan(scan.read(SCANS / name))
    assert result.quality.passed, result.quality.reasons
    values = {c.name: c.value for c in result.quality.checks}
    assert values["point_density"] >= 12.0  # the 6.6k-vertex plantar mesh: ≈ 16 points/cm²
    assert values["noise"] < 0.3


def test_a_sparse_but_even_scan_passes():
    """20k points (≈ 25 plantar points/cm²): sparse, but no region, hole or noise fails."""
    data = synthetic.synth_scan(SHAPE, n_points=20_000, noise_mm=0.5, outlier_fraction=0.01, seed=1)
    assert failing(data.points) == set()


def test_the_limits_are_parameters():
    points = good_points()
    hole = (np.hypot(points[:, 0] - 0.12 * FL, points[:, 1]) < 10.0) & (points[:, 2] < 20.0)
    lenient = params.with_overrides(params.defaults(), {"quality.max_hole_mm": 25.0})
    [result] = pipeline.measure_scan(scan.from_points(points[~hole]), params=lenient)
    assert result.quality.passed
    strict = params.with_overrides(params.defaults(), {"quality.min_density_per_cm2": 1000.0})
    assert failing(points, params=strict) == {"point_density"}


def test_quality_to_dict_lists_every_check_with_value_and_limit():
    [result] = pipeline.measure_scan(scan.from_points(good_points()))
    d = result.quality.to_dict()
    assert (d["passed"], d["forced"], d["reasons"]) == (True, False, [])
    limits = params.defaults().quality
    assert d["checks"]["noise"]["limit"] == limits.max_noise_mm
    assert d["checks"]["holes"]["unit"] == "mm"
    assert all(set(c) == {"passed", "value", "limit", "unit"} for c in d["checks"].values())
