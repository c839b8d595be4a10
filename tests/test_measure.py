"""Tests of orthocad.measure: accuracy on synthetic feet, missing values, classification,
real scans, landmarks and the result's contracts."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orthocad import measure as m
from orthocad import params, pipeline, scan, synthetic
from orthocad.enums import ArchType, Loading, RearfootType, ScanKind, Side, Units
from orthocad.synthetic import FootShape

ROOT = Path(__file__).resolve().parents[1]
SCANS = ROOT / "scans"


def _accuracy_module():
    """bench/accuracy.py, registered as a module so its worker processes can find its functions."""
    spec = importlib.util.spec_from_file_location("accuracy", ROOT / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("accuracy", module)
    spec.loader.exec_module(module)
    return sys.modules["accuracy"]


accuracy = _accuracy_module()


def measured(shape: FootShape, *, seed: int = 0, loading: Loading = Loading.WEIGHT_BEARING,
             **scan_options) -> m.Measurements:
    """A synthetic scan of ``shape`` through the whole pipeline (0.5 mm noise, 1 % outliers)."""
    options = dict(n_points=200_000, noise_mm=0.5, outlier_fraction=0.01, pose="random",
                   seed=seed) | scan_options
    data = synthetic.synth_scan(shape, **options)
    [result] = pipeline.measure_scan(scan.from_points(data.points), loading=loading)
    return result


# -- accuracy: the spec's bar --------------------------------------------------------------


@pytest.mark.slow
def test_fifty_random_feet_meet_the_spec_bar():
    """≥ 98 % of all checks within the spec's tolerances, the side always right
    (random shapes over every control's range, random pose, metres on a quarter,
    0.5 mm noise, 1 % outliers, a floor patch on half; seeds apart from the bench's)."""
    results = accuracy.run(50, seed=1, workers=2)
    within, total = accuracy.pooled(results)
    assert all(r["side_ok"] for r in results)
    assert within >= accuracy.BAR * total, "\n" + accuracy.table(results)
    # Every measurement the truth has is measured, and none is far off.
    for name, tolerance in accuracy.TOLERANCES.items():
        e = accuracy.errors(results, name)
        assert np.all(np.isfinite(e)), name
        assert np.mean(e <= tolerance) >= 0.9, (name, accuracy.table(results))
    assert {r["scan_kind"] for r in results} == {"full", "plantar"}


def test_a_noise_free_foot_is_measured_to_its_truth():
    data = synthetic.synth_scan(FootShape(), n_points=200_000, seed=2)
    [result] = pipeline.measure_scan(scan.from_points(data.points))
    for name, tolerance in accuracy.TOLERANCES.items():
        assert getattr(result, name) == pytest.approx(data.truth[name], abs=tolerance / 3), name
    assert result.side is Side.RIGHT and result.scan_kind is ScanKind.FULL


@pytest.mark.parametrize(("arch", "seed"), [(3.0, 11), (14.0, 12), (26.0, 13)])
def test_the_arch_apex_is_the_crest_centroid_of_the_truth(arch, seed):
    """Within 5 mm (2 %FL) of the truth; the highest slice alone wanders up to 16 mm
    along a flat-topped vault."""
    shape = FootShape(medial_arch_height_mm=arch)
    result = measured(shape, seed=seed)
    truth = synthetic.truth(shape)["medial_arch_apex_x_mm"]
    assert result.medial_arch_apex_x_mm == pytest.approx(truth, abs=5.0)


# -- missing values -----------------------------------------------------------------------


def test_a_full_scan_misses_nothing():
    result = measured(FootShape(side=Side.LEFT), seed=3)
    assert result.missing == {}
    assert all(getattr(result, name) is not None for name in m.SPEC_FIELDS)
    assert result.side is Side.LEFT


def test_a_plantar_scan_has_no_dorsum_and_a_low_heel_no_rearfoot_angle():
    result = measured(FootShape(scan_kind=ScanKind.PLANTAR, trim_height_mm=80.0), seed=4)
    assert result.scan_kind is ScanKind.PLANTAR
    assert result.dorsal_height_mm is None and result.arch_height_index is None
    assert "no dorsum" in result.missing["dorsal_height_mm"]
    assert "no dorsum" in result.missing["arch_height_index"]
    # Seen from below, the heel's walls end near its widest point (≈ 26 mm).
    assert result.rearfoot_angle_deg is None
    assert "35 mm" in result.missing["rearfoot_angle_deg"]
    assert set(result.missing) == {"dorsal_height_mm", "arch_height_index", "rearfoot_angle_deg"}
    assert result.classification.rearfoot is None
    assert result.classification.rearfoot_reason == "rearfoot angle missing"
    # What the sole gives is there.
    for name in ("foot_length_mm", "ball_width_mm", "medial_arch_height_mm", "arch_index"):
        assert getattr(result, name) is not None, name


def test_a_heel_cut_below_35_mm_has_no_rearfoot_angle():
    data = synthetic.synth_scan(FootShape(), n_points=100_000, noise_mm=0.3, seed=5)
    [foot] = pipeline.frame_feet(pipeline.split_and_clean(scan.from_points(data.points)))
    low = foot.points_mm[:, 2] <= 30.0  # the scan stops at 30 mm: a heel cut off
    result = m.measure(replace(foot, points_mm=foot.points_mm[low], normals=None))
    assert result.rearfoot_angle_deg is None
    assert "needs both heel walls up to 35 mm" in result.missing["rearfoot_angle_deg"]



# -- classification -------------------------------------------------------------------------

DEFAULTS = params.defaults()


def classify(*, ahi=None, ai=None, angle=None, kind=ScanKind.FULL,
             loading=Loading.WEIGHT_BEARING, p=DEFAULTS) -> m.Classification:
    values = {"arch_height_index": ahi, "arch_index": ai, "rearfoot_angle_deg": angle}
    return m.classify(values, scan_kind=kind, loading=loading, params=p)


@pytest.mark.parametrize(("ai", "expected"), [
    (0.30, ArchType.LOW), (0.26, ArchType.LOW), (0.2599, ArchType.NORMAL), (0.23, ArchType.NORMAL),
    (0.2101, ArchType.NORMAL), (0.21, ArchType.HIGH), (0.15, ArchType.HIGH)])
def test_arch_index_thresholds(ai, expected):
    c = classify(ai=ai, kind=ScanKind.PLANTAR)
    assert (c.arch, c.arch_driver, c.arch_conflict) == (expected, "arch_index", None)
    assert f"{ai:.3f}" in c.arch_reason


@pytest.mark.parametrize(("ahi", "expected"), [
    (0.29, ArchType.LOW), (0.3099, ArchType.LOW), (0.31, ArchType.NORMAL), (0.34, ArchType.NORMAL),
    (0.37, ArchType.NORMAL), (0.3701, ArchType.HIGH)])
def test_arch_height_index_thresholds(ahi, expected):
    c = classify(ahi=ahi)
    assert (c.arch, c.arch_driver, c.arch_conflict) == (expected, "arch_height_index", None)


def test_ahi_beats_the_arch_index_and_the_conflict_is_recorded():
    c = classify(ahi=0.30, ai=0.23)  # AHI: low; arch index: normal
    assert (c.arch, c.arch_driver) == (ArchType.LOW, "arch_height_index")
    assert "arch index says normal" in c.arch_conflict and "AHI wins" in c.arch_conflict
    c = classify(ahi=0.34, ai=0.18)  # AHI: normal; arch index: high
    assert (c.arch, c.arch_driver) == (ArchType.NORMAL, "arch_height_index")
    assert "arch index says high" in c.arch_conflict
    agree = classify(ahi=0.40, ai=0.18)
    assert (agree.arch, agree.arch_conflict) == (ArchType.HIGH, None)


@pytest.mark.parametrize("loading", [Loading.NON_WEIGHT_BEARING, Loading.FOAM_BOX])
def test_footprint_classes_do_not_apply_without_weight_bearing(loading):
    plantar = classify(ai=0.30, kind=ScanKind.PLANTAR, loading=loading)
    assert plantar.arch is None and plantar.arch_driver is None
    assert "do not apply" in plantar.arch_reason and loading.value in plantar.arch_reason
    full = classify(ahi=0.30, ai=0.15, loading=loading)  # the footprint is not even a vote
    assert (full.arch, full.arch_driver, full.arch_conflict) == (
        ArchType.LOW, "arch_height_index", None)


@pytest.mark.parametrize(("angle", "expected"), [
    (8.0, RearfootType.PRONATED), (4.01, RearfootType.PRONATED), (4.0, RearfootType.NEUTRAL),
    (0.0, RearfootType.NEUTRAL), (-2.0, RearfootType.NEUTRAL), (-2.01, RearfootType.SUPINATED)])
def test_rearfoot_thresholds(angle, expected):
    c = classify(angle=angle)
    assert (c.rearfoot, c.rearfoot_driver) == (expected, "rearfoot_angle_deg")


def test_arch_and_rearfoot_are_classified_independently_with_parameter_thresholds():
    c = classify(ai=0.27, angle=5.0, kind=ScanKind.PLANTAR)
    assert (c.arch, c.rearfoot) == (ArchType.LOW, RearfootType.PRONATED)
    moved = params.with_overrides(DEFAULTS, {"classification.arch_index_low": 0.30,
                                             "classification.pronated_deg": 6.0})
    c = classify(ai=0.27, angle=5.0, kind=ScanKind.PLANTAR, p=moved)
    assert (c.arch, c.rearfoot) == (ArchType.NORMAL, RearfootType.NEUTRAL)
    nothing = classify()
    assert nothing.arch is None and nothing.arch_reason == "no arch measurement"


def test_measure_passes_its_loading_to_the_classification():
    result = measured(FootShape(scan_kind=ScanKind.PLANTAR), seed=6, loading=Loading.FOAM_BOX)
    assert result.loading is Loading.FOAM_BOX
    assert result.arch_index is not None  # measured, but not a class on a foam box
    assert result.classification.arch is None


# -- real scans ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    out = {}
    for name in ("techmed3d_plantar_right.obj", "find_template_left.obj"):
        [foot] = pipeline.load_feet(SCANS / name)
        [result] = pipeline.measure_scan(scan.read(SCANS / name))  # no --force: the gate passes
        out[name] = (foot, result)
    return out


@pytest.mark.parametrize(("name", "side", "kind"), [
    ("techmed3d_plantar_right.obj", Side.RIGHT, ScanKind.PLANTAR),
    ("find_template_left.obj", Side.LEFT, ScanKind.FULL)])
def test_real_scans_are_measured_with_plausible_values(real, name, side, kind):
    _, result = real[name]
    assert result.quality.passed and not result.quality.forced
    assert (result.side, result.scan_kind) == (side, kind)
    assert 200.0 <= result.foot_length_mm <= 320.0
    assert 75.0 <= result.ball_width_mm <= 125.0
    assert 45.0 <= result.heel_width_mm <= 85.0
    assert result.heel_width_mm < result.ball_width_mm
    assert 0.65 <= result.truncated_length_mm / result.foot_length_mm <= 0.78
    assert 0.58 <= result.fifth_met_x_mm / result.foot_length_mm <= 0.70
    assert result.fifth_met_x_mm < result.truncated_length_mm  # MTH5 behind MTH1
    assert 5.0 <= result.medial_arch_height_mm <= 40.0
    assert 0.0 <= result.arch_index <= 0.4
    assert -10.0 <= result.rearfoot_angle_deg <= 10.0  # both scans show the heel up to 35 mm
    if kind is ScanKind.FULL:
        assert 50.0 <= result.dorsal_height_mm <= 100.0
        assert result.missing == {}
    else:
        assert set(result.missing) == {"dorsal_height_mm", "arch_height_index"}


def _find_keypoint(column: str) -> np.ndarray:
    """A FIND template keypoint in the scan's millimetres (the CSV gives vertex indices)."""
    with open(SCANS / "find_template_keypoints.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["model"] == "FIND")
    raw = scan.read(SCANS / "find_template_left.obj")  # metres, read as millimetres
    return raw.points_mm[int(row[column])]


def test_the_toe_tip_landmark_is_the_foot_s_front_on_the_hallux(real):
    foot, result = real["find_template_left.obj"]
    tip = np.array(result.landmarks_mm["toe_tip"])
    # It is the max-x point the foot length is measured to ...
    assert tip[0] - result.landmarks_mm["pternion"][0] == pytest.approx(result.foot_length_mm)
    assert tip[0] == pytest.approx(foot.points_mm[:, 0].max(), abs=0.5)
    # ... and, mapped back into the scan, it lies on the big toe.
    in_scan = foot.to_scan(tip)
    toes = {name: np.linalg.norm(in_scan - _find_keypoint(name))
            for name in ("big toe", "2nd toe", "3rd toe", "4th toe", "little toe")}
    assert min(toes, key=toes.get) == "big toe"
    assert toes["big toe"] <= 3.5


def test_find_big_toe_tip_is_within_3_mm_of_its_keypoint(real):
    """The hallux front is flat across (0.35 mm of x over 8 mm of y), so its tip is taken along
    the spec's long axis (pternion → second toe): 2.1 mm from the keypoint; the max-x point of
    the principal-axis frame is 3.2 mm from it."""
    foot, result = real["find_template_left.obj"]
    tip = foot.to_scan(np.array(result.landmarks_mm["hallux_tip"]))
    assert np.linalg.norm(tip - _find_keypoint("big toe")) <= 3.0


# -- the result's contracts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def plantar_result():
    return measured(FootShape(scan_kind=ScanKind.PLANTAR, side=Side.LEFT), seed=7)


def test_to_dict_holds_the_spec_names_missing_reasons_classes_quality_and_landmarks(plantar_result):
    d = plantar_result.to_dict()
    assert list(d) == ["side", "scan_kind", "loading", *m.SPEC_FIELDS, *m.EXTRA_FIELDS,
                       "missing", "classification", "quality", "landmarks_mm"]
    assert (d["side"], d["scan_kind"], d["loading"]) == ("left", "plantar", "weight_bearing")
    assert d["dorsal_height_mm"] is None and "dorsal_height_mm" in d["missing"]
    assert isinstance(d["foot_length_mm"], float)
    assert d["classification"]["arch"] in {"low", "normal", "high"}
    assert d["classification"]["arch_driver"] == "arch_index"
    assert d["quality"]["passed"] is True and set(d["quality"]["checks"]) == {
        "point_density", "even_sampling", "sole_coverage", "holes", "noise"}
    assert set(d["landmarks_mm"]) == {"pternion", "toe_tip", "hallux_tip", "mth1", "mth5",
                                      "arch_top"}
    assert json.loads(json.dumps(d)) == d  # plain JSON


def test_to_row_is_one_flat_csv_row(plantar_result):
    row = plantar_result.to_row()
    assert all(not isinstance(v, dict | list) for v in row.values())
    for name in m.SPEC_FIELDS + m.EXTRA_FIELDS:
        assert name in row
    assert row["class_arch"] == plantar_result.classification.arch.value
    assert row["class_arch_driver"] == "arch_index"
    assert row["quality_passed"] is True and row["quality_forced"] is False
    assert row["quality_reasons"] == ""
    assert "dorsal_height_mm: plantar-only scan: no dorsum" in row["missing"]
    assert "landmarks_mm" not in row


def test_landmarks_agree_with_the_measurements(plantar_result):
    r, marks = plantar_result, plantar_result.landmarks_mm
    x0 = marks["pternion"][0]
    assert marks["toe_tip"][0] - x0 == pytest.approx(r.foot_length_mm)
    assert marks["mth1"][0] - x0 == pytest.approx(r.truncated_length_mm)
    assert marks["mth5"][0] - x0 == pytest.approx(r.fifth_met_x_mm)
    assert marks["arch_top"][2] == pytest.approx(r.medial_arch_height_mm)
    assert marks["mth1"][1] > 0 > marks["mth5"][1]  # +Y is medial in the canonical frame
    assert 0.25 * r.foot_length_mm <= marks["arch_top"][0] - x0 <= 0.65 * r.foot_length_mm


def test_a_rigid_motion_and_metres_change_nothing():
    shape = FootShape(medial_arch_height_mm=18.0)
    a = measured(shape, seed=8, pose=None)
    b = measured(shape, seed=8, units=Units.M)
    for name, tolerance in accuracy.TOLERANCES.items():
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=tolerance / 2), name


def test_the_hand_made_result_needs_no_quality():
    """Other stages (prescribe's tests) build results by hand: quality defaults to no checks."""
    c = classify(ai=0.23, kind=ScanKind.PLANTAR)
    values = dict.fromkeys(m.SPEC_FIELDS + m.EXTRA_FIELDS)
    result = m.Measurements(side=Side.RIGHT, scan_kind=ScanKind.PLANTAR,
                            loading=Loading.WEIGHT_BEARING, classification=c, **values)
    assert result.quality.checks == () and result.quality.passed
    assert result.landmarks_mm == {} and result.missing == {}


# -- the package-level call: orthocad.measure(scan, ...) ---------------------------------------


def test_orthocad_measure_is_the_stage_module_and_measures_a_file_a_scan_or_a_foot(real):
    import orthocad
    from orthocad.measure import Measurements

    assert orthocad.measure is m and callable(orthocad.measure)
    foot, expected = real["find_template_left.obj"]
    path = SCANS / "find_template_left.obj"
    for given in (path, str(path), scan.read(path), foot):
        result = orthocad.measure(given)
        assert isinstance(result, Measurements)
        assert result.side is Side.LEFT
        assert result.to_row() == expected.to_row()


def test_orthocad_measure_picks_one_foot_of_a_pair_by_side_and_asks_otherwise():
    import orthocad
    from orthocad.errors import InputError

    right = synthetic.synth_scan(FootShape(side=Side.RIGHT, foot_length_mm=250.0),
                                 n_points=60_000, seed=1)
    left = synthetic.synth_scan(FootShape(side=Side.LEFT, foot_length_mm=270.0),
                                n_points=60_000, seed=2)
    shift = right.points[:, 1].min() - left.points[:, 1].max() - 60.0
    pair = scan.from_points(np.vstack([right.points, left.points + [0.0, shift, 0.0]]))
    with pytest.raises(InputError, match="holds two feet: pass side="):
        orthocad.measure(pair)
    for side, length in ((Side.LEFT, 270.0), (Side.RIGHT, 250.0)):
        result = orthocad.measure(pair, side=side)
        assert result.side is side
        assert result.foot_length_mm == pytest.approx(length, abs=1.5)
