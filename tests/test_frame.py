"""Tests of orthocad.frame: the canonical frame, side and scan kind, on synthetic and real feet.

Synthetic feet (:mod:`orthocad.synthetic`) are built in the canonical frame
of docs/frame.md, so ``foot.to_canonical @ synthetic.pose`` must be the
identity (times the y mirror for a left foot): every check compares the
frame found from noisy, posed, outlier-ridden points with that truth.
"""

from __future__ import annotations

import hashlib
import math
import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orthocad import frame, scan, synthetic
from orthocad.enums import ScanKind, Side, Units
from orthocad.errors import NotAFootError
from orthocad.scan import Scan

SCANS = Path(__file__).resolve().parents[1] / "scans"
SHA256 = {  # as listed in scans/README.md
    "techmed3d_plantar_right.obj": (
        "eef9189914bf674e964124837fc0b6e73de9ffbf18be2677214ebe2a86232f6b"
    ),
    "find_template_left.obj": "405f13b9b5bd06f3a8394f482dc8e2829c2bae30736357dfdec8638fd8c72b25",
}
X = np.array([1.0, 0.0, 0.0])


@cache
def framed(
    shape: synthetic.FootShape,
    *,
    n_points: int = 120_000,
    noise_mm: float = 0.5,
    outliers: float = 0.01,
    floor: bool = False,
    seed: int = 0,
) -> tuple[synthetic.SyntheticScan, frame.Foot]:
    """A posed, noisy synthetic scan, read and cleaned as the pipeline does, then framed."""
    synth = synthetic.synth_scan(
        shape,
        n_points=n_points,
        noise_mm=noise_mm,
        outlier_fraction=outliers,
        floor=floor,
        pose="random",
        seed=seed,
    )
    cleaned = scan.clean(scan.from_points(synth.points, units=Units.MM))
    return synth, frame.canonical(cleaned)


def frame_error(foot: frame.Foot, synth: synthetic.SyntheticScan, pose=None) -> dict[str, float]:
    """How far the frame found is from the true one (angles in degrees, offsets in mm).

    ``pose`` (default: the scan's) maps the true frame, un-mirrored, to the points framed.
    """
    found = foot.to_canonical @ (synth.pose if pose is None else pose)  # true frame → found
    mirror = np.diag([1.0, -1.0 if synth.shape.side is Side.LEFT else 1.0, 1.0])
    rotation = found[:3, :3] @ mirror
    return {
        "x_deg": math.degrees(math.acos(np.clip(rotation[0, 0], -1, 1))),
        "z_deg": math.degrees(math.acos(np.clip(rotation[2, 2], -1, 1))),
        "origin_x": abs(found[0, 3]),
        "origin_y": abs(found[1, 3]),
        "origin_z": abs(found[2, 3]),
    }


def foot_length(points_mm: np.ndarray) -> float:
    return frame.extreme_mm(points_mm, X) + frame.extreme_mm(points_mm, -X)


# --- the frame on synthetic feet ---------------------------------------------------------------


@pytest.mark.parametrize("kind", [ScanKind.FULL, ScanKind.PLANTAR])
@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_frame_matches_the_reference_under_pose_noise_and_outliers(side, kind):
    shape = synthetic.FootShape(side=side, scan_kind=kind)
    synth, foot = framed(shape, seed=11)
    error = frame_error(foot, synth)
    assert error["x_deg"] <= 0.5
    assert error["z_deg"] <= 0.5
    assert error["origin_x"] <= 1.0
    assert error["origin_y"] <= 1.0
    assert error["origin_z"] <= 0.3
    assert foot_length(foot.points_mm) == pytest.approx(synth.truth["foot_length_mm"], abs=1.0)
    assert (foot.side, foot.scan_kind, foot.side_detected) == (side, kind, True)
    assert np.linalg.det(foot.to_canonical[:3, :3]) == pytest.approx(
        -1.0 if side is Side.LEFT else 1.0
    )
    assert not foot.support_from_floor
    assert 0.0 < foot.support_residual_mm < 1.0


def test_random_feet_are_framed_within_tolerance():
    """Shapes across every control's range, all with the spec's noise, outliers and pose."""
    rng = np.random.default_rng(2024)
    worst = dict.fromkeys(("x_deg", "z_deg", "origin_x", "origin_z", "length"), 0.0)
    for i in range(6):
        shape = synthetic.random_shape(rng)
        synth, foot = framed(shape, n_points=100_000, seed=100 + i)
        error = frame_error(foot, synth)
        error["length"] = abs(foot_length(foot.points_mm) - synth.truth["foot_length_mm"])
        worst = {key: max(worst[key], error[key]) for key in worst}
        assert foot.side is shape.side, shape
    assert worst["x_deg"] <= 0.5 and worst["z_deg"] <= 0.5, worst
    assert worst["origin_x"] <= 1.0 and worst["origin_z"] <= 0.3, worst
    assert worst["length"] <= 1.0, worst


def test_floor_found_while_cleaning_is_the_support_plane():
    synth, foot = framed(synthetic.FootShape(), floor=True, seed=5)
    assert foot.support_from_floor
    error = frame_error(foot, synth)
    assert error["z_deg"] <= 0.5 and error["origin_z"] <= 0.3 and error["origin_x"] <= 1.0
    # The floor cleaning leaves around the foot is not foot: it would lengthen it.
    assert len(foot.points_mm) < len(foot.scan.points_mm)
    assert foot_length(foot.points_mm) == pytest.approx(synth.truth["foot_length_mm"], abs=1.0)
    assert foot.side is Side.RIGHT


@cache
def _reference_cloud() -> tuple[synthetic.SyntheticScan, frame.Foot]:
    synth = synthetic.synth_scan(
        synthetic.FootShape(side=Side.LEFT), n_points=50_000, noise_mm=0.5, seed=3
    )
    return synth, frame.canonical(Scan(points_mm=synth.points))


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    quaternion=st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
        lambda q: np.linalg.norm(q) > 0.1
    ),
    shift=st.lists(st.floats(-2000.0, 2000.0), min_size=3, max_size=3),
    metres=st.booleans(),
)
def test_frame_is_invariant_to_rigid_motion_and_units(quaternion, shift, metres):
    synth, reference = _reference_cloud()
    w, x, y, z = np.asarray(quaternion) / np.linalg.norm(quaternion)
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
    moved = synth.points @ rotation.T + np.asarray(shift)
    if metres:
        cloud = scan.from_points(moved / 1000.0, units=Units.AUTO)
        assert cloud.units is Units.M
    else:
        cloud = Scan(points_mm=moved)
    foot = frame.canonical(cloud)
    # Same points, same order: the canonical coordinates must agree point by point.
    distance = np.linalg.norm(foot.points_mm - reference.points_mm, axis=1)
    assert np.percentile(distance, 99) <= 1.0
    assert foot.side is Side.LEFT and foot.scan_kind is ScanKind.FULL
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, shift
    error = frame_error(foot, synth, pose @ synth.pose)
    assert error["x_deg"] <= 0.5 and error["z_deg"] <= 0.5 and error["origin_z"] <= 0.3
    assert foot_length(foot.points_mm) == pytest.approx(synth.truth["foot_length_mm"], abs=1.0)


# --- side ------------------------------------------------------------------------------------

EXTREMES = [
    synthetic.FootShape(medial_arch_height_mm=0.0, arch_contact_width_mm=70.0),  # flat foot
    synthetic.FootShape(medial_arch_height_mm=28.0, arch_contact_width_mm=0.0),  # high arch
    synthetic.FootShape(
        rearfoot_angle_deg=12.0, medial_arch_height_mm=0.0, arch_contact_width_mm=70.0
    ),
    synthetic.FootShape(
        rearfoot_angle_deg=-8.0, medial_arch_height_mm=28.0, arch_contact_width_mm=0.0
    ),
    synthetic.FootShape(foot_length_mm=220.0, ball_width_mm=110.0, heel_width_mm=80.0),
    synthetic.FootShape(foot_length_mm=310.0, ball_width_mm=95.0, heel_width_mm=50.0),
    synthetic.FootShape(
        scan_kind=ScanKind.PLANTAR,
        trim_height_mm=30.0,
        medial_arch_height_mm=0.0,
        arch_contact_width_mm=70.0,
    ),
    synthetic.FootShape(
        scan_kind=ScanKind.PLANTAR,
        trim_height_mm=30.0,
        medial_arch_height_mm=28.0,
        arch_contact_width_mm=0.0,
    ),
]


def _shapes_for_side_test() -> list[synthetic.FootShape]:
    rng = np.random.default_rng(7)
    return EXTREMES + [synthetic.random_shape(rng, side=Side.RIGHT) for _ in range(16)]


def test_side_is_right_on_every_synthetic_foot_and_its_mirror():
    """A right foot is detected right and the same foot mirrored is detected left.

    The mirror of a synthetic right foot is exactly its left foot; noise-free
    here, so only the geometry decides.
    """
    for i, shape in enumerate(_shapes_for_side_test()):
        synth = synthetic.synth_scan(shape, n_points=40_000, pose="random", seed=i)
        right = frame.canonical(Scan(points_mm=synth.points))
        mirrored = frame.canonical(Scan(points_mm=synth.points * [1.0, -1.0, 1.0]))
        assert right.side is Side.RIGHT, (shape, right.side_evidence)
        assert mirrored.side is Side.LEFT, (shape, mirrored.side_evidence)
        # At least two of the three cues agree, on both.
        cues = ("arch", "toes", "ball")
        assert sum(right.side_evidence[c] > 0 for c in cues) >= 2, right.side_evidence
        assert sum(mirrored.side_evidence[c] < 0 for c in cues) >= 2, mirrored.side_evidence
        # Mirroring a left foot back gives the right foot's canonical points.
        gap = np.linalg.norm(right.points_mm - mirrored.points_mm, axis=1)
        assert np.percentile(gap, 99) <= 1.0


def test_given_side_overrides_detection_and_keeps_the_evidence():
    synth = synthetic.synth_scan(synthetic.FootShape(), n_points=40_000, seed=1)
    foot = frame.canonical(Scan(points_mm=synth.points), side=Side.LEFT)
    assert foot.side is Side.LEFT and not foot.side_detected and foot.mirrored
    assert foot.side_evidence["total"] > 0  # the geometry still says right
    assert np.linalg.det(foot.to_canonical[:3, :3]) == pytest.approx(-1.0)


# --- scan kind -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        (synthetic.FootShape(dorsal_height_mm=45.0), ScanKind.FULL),
        (synthetic.FootShape(dorsal_height_mm=85.0), ScanKind.FULL),
        (synthetic.FootShape(scan_kind=ScanKind.PLANTAR, trim_height_mm=30.0), ScanKind.PLANTAR),
        # Trimmed just below the top of the dorsum: only the dorsum's crown is missing.
        (
            synthetic.FootShape(
                scan_kind=ScanKind.PLANTAR, trim_height_mm=60.0, dorsal_height_mm=65.0
            ),
            ScanKind.PLANTAR,
        ),
    ],
)
def test_scan_kind(shape, kind):
    synth = synthetic.synth_scan(shape, n_points=40_000, noise_mm=0.5, pose="random", seed=2)
    assert frame.canonical(Scan(points_mm=synth.points)).scan_kind is kind


# --- the Foot's transforms -------------------------------------------------------------------


@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_transforms_round_trip_and_output_frame_unmirrors(side):
    synth = synthetic.synth_scan(
        synthetic.FootShape(side=side), n_points=40_000, noise_mm=0.3, pose="random", seed=6
    )
    foot = frame.canonical(Scan(points_mm=synth.points))
    np.testing.assert_allclose(foot.to_scan(foot.points_mm), synth.points, atol=1e-9)
    np.testing.assert_allclose(foot.from_canonical @ foot.to_canonical, np.eye(4), atol=1e-12)
    # The output frame is the synthetic generator's own: a left foot's medial side at −Y.
    unposed = (synth.points - synth.pose[:3, 3]) @ synth.pose[:3, :3]
    gap = np.linalg.norm(foot.to_output(foot.points_mm) - unposed, axis=1)
    assert np.percentile(gap, 99) <= 1.0
    assert foot.mirrored is (side is Side.LEFT)


def test_mesh_normals_and_windings_stay_outward_through_the_mirror():
    """FIND's template is a closed, outward-wound left-foot mesh: mirrored, it must stay so."""
    raw = scan.read(SCANS / "find_template_left.obj")
    foot = frame.canonical(raw)
    assert foot.side is Side.LEFT
    tri = foot.points_mm[foot.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    volume = np.einsum("ij,ij->i", tri[:, 0], cross).sum() / 6.0
    assert volume > 0  # outward winding: positive signed volume
    if foot.normals is not None:
        face_normal = cross / np.linalg.norm(cross, axis=1, keepdims=True)
        vertex_normal = foot.normals[foot.faces].mean(axis=1)
        assert np.mean(np.einsum("ij,ij->i", face_normal, vertex_normal) > 0) > 0.99


def test_canonical_does_not_touch_the_scan():
    synth = synthetic.synth_scan(synthetic.FootShape(), n_points=30_000, noise_mm=0.5, seed=4)
    points = synth.points.copy()
    normals = synth.normals.copy()
    cloud = Scan(points_mm=points, normals=normals)
    first = frame.canonical(cloud)
    second = frame.canonical(cloud)
    np.testing.assert_array_equal(points, synth.points)
    np.testing.assert_array_equal(normals, synth.normals)
    np.testing.assert_array_equal(first.points_mm, second.points_mm)
    assert first.scan is cloud


# --- real scans ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "side", "kind"),
    [
        ("techmed3d_plantar_right.obj", Side.RIGHT, ScanKind.PLANTAR),
        ("find_template_left.obj", Side.LEFT, ScanKind.FULL),
    ],
)
def test_real_scans_are_framed(name, side, kind):
    path = SCANS / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]
    foot = frame.canonical(scan.clean(scan.read(path)))
    assert (foot.side, foot.scan_kind) == (side, kind), foot.side_evidence
    assert 200.0 <= foot_length(foot.points_mm) <= 320.0
    # Standing on z = 0: nothing of the sole hangs below the plane.
    assert np.percentile(foot.points_mm[:, 2], 0.1) >= -1.0
    assert foot.sha256 == SHA256[name] and foot.source == path


# --- not a foot ------------------------------------------------------------------------------


def _sphere(n: int = 20_000) -> np.ndarray:
    direction = np.random.default_rng(0).normal(size=(n, 3))
    return 60.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        (_sphere(), "elongated"),
        (np.random.default_rng(1).uniform(0, 100, (20_000, 3)) * [2.5, 1.0, 0.0], "flat"),
        (_sphere(200), "too few"),
    ],
)
def test_clouds_that_are_no_foot_are_refused_with_a_reason(points, problem):
    with pytest.raises(NotAFootError) as caught:
        frame.canonical(Scan(points_mm=points))
    message = str(caught.value)
    assert problem in message and "\n" not in message and ":" in message


# --- speed -----------------------------------------------------------------------------------


def test_frame_is_fast_on_a_cleaned_200k_point_scan():
    synth = synthetic.synth_scan(
        synthetic.FootShape(), n_points=200_000, noise_mm=0.5, outlier_fraction=0.01, pose="random"
    )
    cleaned = scan.clean(scan.from_points(synth.points, units=Units.MM))
    frame.canonical(cleaned)  # imports and caches warmed
    start = time.perf_counter()
    frame.canonical(cleaned)
    # Budget 0.25 s on an idle 2-core machine; the margin absorbs a loaded test runner.
    assert time.perf_counter() - start < 1.0
