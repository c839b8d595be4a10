"""Tests of orthocad.synthetic: controls, exact truth, meshes and scans."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from orthocad import synthetic as syn
from orthocad.enums import ScanKind, Side, Units
from orthocad.errors import InputError
from orthocad.synthetic import FLOOR, FOOT, OUTLIER, FootShape, ShapeError

DEFAULT = FootShape()
PLANTAR = FootShape(scan_kind=ScanKind.PLANTAR)


def replace_side(shape: FootShape, side: Side) -> FootShape:
    return FootShape(**{**shape.controls(), "side": side})


# -- controls and their truth ----------------------------------------------------

# control, values swept (others at their defaults), how close its truth stays to it
SWEEPS = [
    ("foot_length_mm", (220.0, 265.0, 310.0), 1e-9),
    ("ball_width_mm", (80.0, 100.0, 125.0), 1.5),
    ("heel_width_mm", (50.0, 64.0, 80.0), 1.5),
    ("dorsal_height_mm", (45.0, 64.0, 85.0), 0.5),
    ("medial_arch_height_mm", (0.0, 7.0, 14.0, 21.0, 28.0), 1.5),
    ("rearfoot_angle_deg", (-8.0, 0.0, 3.0, 12.0), 0.5),
]


@pytest.mark.parametrize(("control", "values", "tol"), SWEEPS, ids=[s[0] for s in SWEEPS])
def test_each_control_moves_its_own_truth(control, values, tol):
    got = np.array([syn.truth(FootShape(**{control: v}))[control] for v in values])
    assert np.all(np.diff(got) > 0), got
    np.testing.assert_allclose(got, values, atol=tol)


def test_dorsal_height_drives_the_arch_height_index():
    ahi = [syn.truth(FootShape(dorsal_height_mm=v))["arch_height_index"] for v in (45, 64, 85)]
    assert np.all(np.diff(ahi) > 0)
    assert ahi[0] < 0.31 < 0.37 < ahi[-1]  # from "high" to "low" across the range


def test_arch_contact_width_drives_the_arch_index_over_its_clinical_range():
    values = (0.0, 20.0, 45.0, 70.0)
    ai = np.array([syn.truth(FootShape(arch_contact_width_mm=v))["arch_index"] for v in values])
    assert np.all(np.diff(ai) > 0), ai
    assert ai[0] <= 0.15 and ai[-1] >= 0.32, ai


def test_a_flat_arch_stands_on_the_whole_midfoot():
    flat = syn.truth(FootShape(medial_arch_height_mm=0.0, arch_contact_width_mm=0.0))
    assert flat["arch_index"] > 0.3
    assert flat["medial_arch_height_mm"] < 2.0


@pytest.mark.parametrize("arch", [2.0, 14.0, 26.0])
def test_the_arch_apex_is_the_middle_of_the_vaults_plateau(arch):
    """The vault rises to its full height over 38–46 % of the construction length and is
    symmetric enough about it that its crest's centroid lies near 42 %FL."""
    t = syn.truth(FootShape(medial_arch_height_mm=arch))
    assert 0.38 <= t["medial_arch_apex_x_mm"] / t["foot_length_mm"] <= 0.48


def test_the_arch_apex_moves_with_the_foot_length():
    short, long = (syn.truth(FootShape(foot_length_mm=v, ball_width_mm=0.4 * v,
                                       dorsal_height_mm=0.25 * v)) for v in (230.0, 300.0))
    ratio = long["medial_arch_apex_x_mm"] / short["medial_arch_apex_x_mm"]
    assert ratio == pytest.approx(300.0 / 230.0, rel=0.03)


def test_default_foot_is_a_normal_adult_foot():
    t = syn.truth(DEFAULT)
    assert t["foot_length_mm"] == pytest.approx(260.0, abs=1e-9)
    assert 0.69 < t["truncated_length_mm"] / t["foot_length_mm"] < 0.74  # MTH1
    assert 0.60 < t["fifth_met_x_mm"] / t["foot_length_mm"] < 0.67  # MTH5 behind MTH1
    assert 0.31 <= t["arch_height_index"] <= 0.37
    assert 0.21 < t["arch_index"] < 0.26
    assert list(t) == [*syn._TRUTH_KEYS, "side", "scan_kind"]
    assert (t["side"], t["scan_kind"]) == ("right", "full")


# -- the truth is exact ------------------------------------------------------------


def test_truth_converges_with_mesh_resolution():
    coarse, fine = syn._truth(DEFAULT, 1), syn._truth(DEFAULT, 2)
    for key in ("foot_length_mm", "ball_width_mm", "heel_width_mm", "dorsal_height_mm",
                "medial_arch_height_mm"):
        assert coarse[key] == pytest.approx(fine[key], abs=0.1), key
    for key in ("truncated_length_mm", "fifth_met_x_mm"):  # 1 mm bins
        assert abs(coarse[key] - fine[key]) <= 1.0, key
    assert coarse["arch_index"] == pytest.approx(fine["arch_index"], abs=0.003)
    assert coarse["rearfoot_angle_deg"] == pytest.approx(fine["rearfoot_angle_deg"], abs=0.05)


def _sampled(points: np.ndarray, fl: float) -> dict[str, float]:
    """The extreme-based measurements, straight from points (no clipping)."""
    x, y, z = points.T
    ball = (x >= 0.55 * fl) & (x <= 0.80 * fl)
    heel = (x >= 0.10 * fl) & (x <= 0.22 * fl) & (z <= 30.0)
    top = np.abs(x - 0.5 * fl) <= 2.0
    return {
        "foot_length_mm": np.ptp(x),
        "ball_width_mm": np.ptp(y[ball]),
        "heel_width_mm": np.ptp(y[heel]),
        "dorsal_height_mm": z[top].max(),
    }


def _sampled_medial_arch_height(points: np.ndarray, normals: np.ndarray, fl: float) -> float:
    """frame.md's medial arch height, literally, on points with their normals."""
    x, y, z = points.T
    keep = (normals[:, 2] < -0.5) & (x >= 0.25 * fl) & (x <= 0.65 * fl)
    x, y, z = x[keep], y[keep], z[keep]
    b = np.floor(x - 0.25 * fl).astype(int)
    hi, lo = np.full(b.max() + 1, -np.inf), np.full(b.max() + 1, np.inf)
    np.maximum.at(hi, b, y)
    np.minimum.at(lo, b, y)
    return z[y >= hi[b] - (hi[b] - lo[b]) / 3].max()


def test_truth_is_the_limit_of_dense_point_samples():
    exact = syn.truth(DEFAULT)
    errors = []
    for n in (20_000, 1_000_000):
        scan = syn.synth_scan(DEFAULT, n_points=n, seed=11)
        sampled = _sampled(scan.points, exact["foot_length_mm"])
        # Samples lie on the surface, so they can only fall short of the exact extremes.
        for key, value in sampled.items():
            assert value <= exact[key] + 1e-9, key
        errors.append(max(exact[key] - value for key, value in sampled.items()))
    assert errors[1] < errors[0]
    assert errors[1] < 0.1
    # The plantar rule on the scan's (exact, smooth) normals agrees with the truth too.
    arch = _sampled_medial_arch_height(scan.points, scan.normals, exact["foot_length_mm"])
    assert arch == pytest.approx(exact["medial_arch_height_mm"], abs=0.1)


def test_truth_left_equals_right_and_is_measured_on_the_mirrored_mesh():
    left = replace_side(DEFAULT, Side.LEFT)
    t_left, t_right = syn.truth(left), syn.truth(DEFAULT)
    assert t_left["side"] == "left" and t_right["side"] == "right"
    assert {k: v for k, v in t_left.items() if k != "side"} == {
        k: v for k, v in t_right.items() if k != "side"
    }
    # Measured afresh from the left mesh mirrored back: the same numbers.
    mesh = syn.foot_mesh(left)
    scanned = np.setdiff1d(np.arange(len(mesh.faces)), mesh.metadata["cap_faces"])
    vertices = mesh.vertices * [1.0, -1.0, 1.0]
    again = syn._measure(vertices, mesh.faces[scanned][:, ::-1], ScanKind.FULL)
    for key in syn._TRUTH_KEYS:
        assert again[key] == pytest.approx(t_right[key], abs=1e-9), key


# -- meshes ------------------------------------------------------------------------------


def test_full_mesh_is_closed_outward_and_capped_flat_at_the_ankle():
    mesh = syn.foot_mesh(DEFAULT)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    cap = mesh.metadata["cap_faces"]
    assert len(cap) > 0
    assert np.all(mesh.vertices[mesh.faces[cap]][:, :, 2] == DEFAULT.ankle_height_mm)
    assert np.all(mesh.face_normals[cap][:, 2] > 0.999)
    assert mesh.vertices[:, 2].min() == 0.0
    assert mesh.vertices[:, 2].max() == DEFAULT.ankle_height_mm


def test_scans_never_sample_the_ankle_cap():
    points = syn.synth_scan(DEFAULT, n_points=100_000).points
    assert points[:, 2].max() < DEFAULT.ankle_height_mm


def test_mesh_is_in_the_canonical_frame():
    mesh = syn.foot_mesh(DEFAULT)
    assert mesh.vertices[:, 0].min() == pytest.approx(0.0, abs=1e-9)
    assert np.ptp(mesh.vertices[:, 0]) == pytest.approx(DEFAULT.foot_length_mm, abs=1e-9)
    # The reference implementation of docs/frame.md finds the identity again...
    scanned = np.setdiff1d(np.arange(len(mesh.faces)), mesh.metadata["cap_faces"])
    angle, shift = syn._frame(mesh.vertices[mesh.faces[scanned]])
    assert abs(math.degrees(angle)) < 0.01
    assert np.abs(shift).max() < 0.01
    # ...and so does frame.md's literal recipe on scan points: 1 mm raster of the
    # points with 0 ≤ z ≤ 40, holes filled, major axis of the occupied cells.
    points = syn.synth_scan(DEFAULT, n_points=200_000).points
    xy = points[points[:, 2] <= 40.0, :2]
    origin = np.floor(xy.min(0))
    ij = np.floor(xy - origin).astype(int)
    grid = np.zeros(ij.max(0) + 1, bool)
    grid[ij[:, 0], ij[:, 1]] = True
    cells = origin + np.argwhere(ndimage.binary_fill_holes(grid)) + 0.5
    _, vecs = np.linalg.eigh(np.cov(cells.T))
    axis = vecs[:, 1] * np.sign(vecs[0, 1])
    assert abs(math.degrees(math.atan2(axis[1], axis[0]))) < 0.1
    assert abs(cells[:, 1].mean()) < 0.3  # the raster grows the silhouette by ≈ ½ cell


def test_heel_lateral_band_ball_and_toes_stand_on_the_floor():
    mesh = syn.foot_mesh(DEFAULT)
    fl = DEFAULT.foot_length_mm
    tri = mesh.vertices[mesh.faces]
    on_floor = np.all(tri[:, :, 2] == 0.0, axis=1)
    x, y = tri[on_floor].mean(1)[:, 0], tri[on_floor].mean(1)[:, 1]
    assert np.any(x < 0.15 * fl)  # heel pad
    ball = (x > 0.6 * fl) & (x < 0.75 * fl)
    assert np.any(ball)
    assert np.any(x > 0.88 * fl)  # toe pads
    # At the arch (42 %FL) only the lateral band touches; the medial side is vaulted.
    arch = np.abs(x - 0.42 * fl) < 2.0
    y_max_arch = tri[np.abs(tri[:, :, 0].mean(1) - 0.42 * fl) < 2.0][:, :, 1].max()
    assert np.any(arch)
    assert y[arch].max() < y_max_arch - 25.0
    assert np.all(mesh.vertices[:, 2] >= 0.0)


def test_left_mesh_is_the_mirror_of_the_right_mesh():
    right, left = syn.foot_mesh(DEFAULT), syn.foot_mesh(replace_side(DEFAULT, Side.LEFT))
    np.testing.assert_array_equal(left.vertices, right.vertices * [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(left.faces, right.faces[:, ::-1])
    assert left.is_winding_consistent and left.volume > 0  # still outward
    # Hallux on the medial side: +y for the right foot, −y for the left.
    tip = right.vertices[np.argmax(right.vertices[:, 0])]
    assert tip[1] > 0
    assert left.vertices[np.argmax(left.vertices[:, 0])][1] == -tip[1]


def _first_hits_from_below(mesh, xy: np.ndarray) -> np.ndarray:
    """z where a vertical ray from below through each (x, y) first meets the mesh."""
    from orthocad._native import open3d

    o3d = open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    rays = np.column_stack([xy, np.full(len(xy), -10.0), np.tile([0.0, 0, 1], (len(xy), 1))])
    return scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy() - 10.0


@pytest.mark.parametrize("eversion", [3.0, 12.0, -8.0])
def test_plantar_scan_sees_the_foot_from_below_only(eversion):
    full = FootShape(rearfoot_angle_deg=eversion)
    plantar = FootShape(rearfoot_angle_deg=eversion, scan_kind=ScanKind.PLANTAR)
    mesh = syn.foot_mesh(plantar)
    assert not mesh.is_watertight and mesh.is_winding_consistent
    assert len(mesh.metadata["cap_faces"]) == 0
    assert mesh.vertices[:, 2].max() <= plantar.trim_height_mm + 1e-9
    # No upward-facing surface: no toe dorsum, no upper walls.
    assert mesh.face_normals[:, 2].max() < 1e-3
    # Every scanned point is the first surface a ray from below meets on the whole foot.
    scan = syn.synth_scan(plantar, n_points=20_000, seed=5)
    steep = np.abs(scan.normals[:, 2]) < 0.05  # grazing rays: float32 cannot tell
    first = _first_hits_from_below(syn.foot_mesh(full), scan.points[~steep, :2])
    np.testing.assert_allclose(first, scan.points[~steep, 2], atol=0.01)
    assert np.all(scan.normals[:, 2] < 1e-3)
    # It holds the whole sole and the walls up to the outline (the widest point).
    t_full, t_plantar = syn.truth(full), syn.truth(plantar)
    for key in ("foot_length_mm", "ball_width_mm", "heel_width_mm", "truncated_length_mm",
                "fifth_met_x_mm", "medial_arch_height_mm", "arch_index"):
        assert t_plantar[key] == pytest.approx(t_full[key], abs=0.05), key


def test_plantar_scan_stops_at_the_trim_height():
    high = FootShape(scan_kind=ScanKind.PLANTAR, medial_arch_height_mm=28.0, trim_height_mm=80.0)
    low = replace(high, trim_height_mm=30.0)
    top_high = syn.synth_scan(high, n_points=50_000).points[:, 2].max()
    top_low = syn.synth_scan(low, n_points=50_000).points[:, 2].max()
    assert top_low <= 30.0 + 1e-9 < top_high
    assert top_low > 29.5  # the high arch's medial wall reaches the trim


def test_plantar_truth_has_no_dorsum_and_no_rearfoot_angle():
    for shape in (PLANTAR, FootShape(scan_kind=ScanKind.PLANTAR, trim_height_mm=80.0,
                                     rearfoot_angle_deg=12.0)):
        plantar = syn.truth(shape)
        assert plantar["dorsal_height_mm"] is None and plantar["arch_height_index"] is None
        assert plantar["scan_kind"] == "plantar"
        # The heel walls end near the heel's widest point (≈ 26 mm) on at least
        # one side: no slice at 35 mm cuts both walls.
        assert plantar["rearfoot_angle_deg"] is None
    low = syn.truth(FootShape(scan_kind=ScanKind.PLANTAR, trim_height_mm=30.0))
    assert low["heel_width_mm"] == pytest.approx(syn.truth(DEFAULT)["heel_width_mm"], abs=0.05)


def test_plantar_truth_converges_with_mesh_resolution():
    coarse, fine = syn._truth(PLANTAR, 1), syn._truth(PLANTAR, 2)
    for key in ("foot_length_mm", "ball_width_mm", "heel_width_mm", "medial_arch_height_mm"):
        assert coarse[key] == pytest.approx(fine[key], abs=0.1), key
    for key in ("truncated_length_mm", "fifth_met_x_mm"):
        assert abs(coarse[key] - fine[key]) <= 1.0, key
    assert coarse["arch_index"] == pytest.approx(fine["arch_index"], abs=0.003)


# -- scans ------------------------------------------------------------------------------


def test_scan_is_deterministic_for_a_seed():
    kw = dict(n_points=20_000, noise_mm=0.5, outlier_fraction=0.01, floor=True, pose="random")
    a = syn.synth_scan(DEFAULT, seed=4, **kw)
    b = syn.synth_scan(DEFAULT, seed=4, **kw)
    c = syn.synth_scan(DEFAULT, seed=5, **kw)
    for field in ("points", "normals", "labels", "pose"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.points, c.points)


def test_pose_and_units_transform_points_as_stated():
    base = syn.synth_scan(DEFAULT, n_points=5_000, seed=3)
    np.testing.assert_array_equal(base.pose, np.eye(4))
    angle = math.radians(30.0)
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, math.cos(angle), -math.sin(angle)],
                    [0, math.sin(angle), math.cos(angle)]]
    pose[:3, 3] = [10.0, -20.0, 300.0]
    moved = syn.synth_scan(DEFAULT, n_points=5_000, seed=3, pose=pose, units=Units.M)
    np.testing.assert_allclose(moved.points * 1000.0, base.points @ pose[:3, :3].T + pose[:3, 3],
                               atol=1e-9)
    np.testing.assert_allclose(moved.normals, base.normals @ pose[:3, :3].T, atol=1e-12)
    assert moved.units is Units.M and moved.truth == base.truth  # truth stays in mm

    rand = syn.synth_scan(DEFAULT, n_points=5_000, seed=3, pose="random", units=Units.IN)
    rot, shift = rand.pose[:3, :3], rand.pose[:3, 3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    assert np.all(np.abs(shift) <= 500.0)
    np.testing.assert_allclose(rand.points * 25.4, base.points @ rot.T + shift, atol=1e-9)


def test_random_poses_are_uniform_rotations():
    # For a uniform rotation, the image of any axis is uniform on the sphere:
    # each coordinate of it is uniform on [−1, 1] (mean 0, variance 1/3).
    z = np.array([syn._pose("random", np.random.default_rng(i))[:3, 2] for i in range(2000)])
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.05)
    np.testing.assert_allclose((z**2).mean(0), 1 / 3, atol=0.03)


def test_noise_moves_points_along_their_normals():
    clean = syn.synth_scan(DEFAULT, n_points=50_000, seed=8)
    noisy = syn.synth_scan(DEFAULT, n_points=50_000, seed=8, noise_mm=0.5)
    offset = noisy.points - clean.points
    along = np.einsum("ij,ij->i", offset, clean.normals)
    np.testing.assert_allclose(offset, along[:, None] * clean.normals, atol=1e-9)
    assert along.std() == pytest.approx(0.5, rel=0.03)
    norms = np.linalg.norm(clean.normals, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)


def test_outliers_are_counted_labelled_and_boxed():
    scan = syn.synth_scan(DEFAULT, n_points=30_000, outlier_fraction=0.02, seed=2)
    assert (scan.labels == FOOT).sum() == 30_000
    out = scan.labels == OUTLIER
    assert out.sum() == round(0.02 * 30_000)
    foot = scan.points[~out]
    lo, hi = foot.min(0), foot.max(0)
    assert np.all(scan.points[out] >= lo - 0.2 * (hi - lo) - 1e-9)
    assert np.all(scan.points[out] <= hi + 0.2 * (hi - lo) + 1e-9)
    assert np.mean(np.any((scan.points[out] < lo) | (scan.points[out] > hi), axis=1)) > 0.5


def test_floor_patch_lies_on_z0_around_but_never_under_the_foot():
    n = 100_000
    scan = syn.synth_scan(DEFAULT, n_points=n, floor=True, seed=6)
    floor = scan.points[scan.labels == FLOOR]
    assert np.all(floor[:, 2] == 0.0)
    assert np.all(scan.normals[scan.labels == FLOOR] == [0.0, 0.0, 1.0])
    fl, bw = DEFAULT.foot_length_mm, DEFAULT.ball_width_mm
    assert np.ptp(floor[:, 0]) == pytest.approx(1.6 * fl, rel=0.01)
    assert np.ptp(floor[:, 1]) == pytest.approx(2.2 * bw, rel=0.01)
    # Same density as the foot: the patch minus the foot's shadow, at n per foot area.
    mesh = syn.foot_mesh(DEFAULT)
    foot_area = mesh.area - mesh.area_faces[mesh.metadata["cap_faces"]].sum()
    shadow = syn._geometry(DEFAULT, 1).shadow.cells.sum() * syn._SHADOW_STEP_MM**2
    expected = n / foot_area * (1.6 * fl * 2.2 * bw - shadow)
    assert len(floor) == pytest.approx(expected, rel=0.02)
    # No floor point under the foot: a vertical ray from below through each misses it.
    from orthocad._native import open3d

    o3d = open3d()
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                        o3d.core.Tensor(mesh.faces.astype(np.uint32)))

    def hits(xy: np.ndarray) -> np.ndarray:
        rays = np.column_stack([xy, np.full(len(xy), -1.0), np.tile([0.0, 0, 1], (len(xy), 1))])
        return np.isfinite(scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
                           ["t_hit"].numpy())

    assert not hits(floor[:, :2]).any()
    sole = scan.points[(scan.labels == FOOT) & (scan.points[:, 2] < 0.01)]
    assert hits(sole[:, :2]).all()  # (the rays do see the foot)
    # ...but right up to it: the gap between floor and foot is under a millimetre.
    gap, _ = cKDTree(scan.points[scan.labels == FOOT, :2]).query(floor[:, :2])
    assert gap.min() < 0.75 and np.sort(gap)[100] < 1.0


def test_synth_scan_of_200k_points_is_fast_once_the_shape_is_cached():
    syn.synth_scan(DEFAULT, n_points=1000)
    start = time.perf_counter()
    scan = syn.synth_scan(DEFAULT, n_points=200_000, noise_mm=0.5, seed=1)
    assert time.perf_counter() - start < 1.0
    assert scan.points.shape == (200_000, 3) and scan.points.dtype == np.float64


# -- shapes -----------------------------------------------------------------------------


def test_out_of_range_controls_are_refused_clearly():
    with pytest.raises(ShapeError, match="foot_length_mm"):
        FootShape(foot_length_mm=400.0)
    with pytest.raises(InputError, match="medial_arch_height_mm"):
        FootShape(medial_arch_height_mm=-1.0)
    with pytest.raises(ValueError, match="rearfoot_angle_deg"):
        FootShape(rearfoot_angle_deg=float("nan"))
    with pytest.raises(ShapeError, match="forefoot must be wider"):
        FootShape(ball_width_mm=80.0, heel_width_mm=75.0)
    with pytest.raises(ShapeError, match="AUTO"):
        FootShape(side=Side.AUTO)
    with pytest.raises(ShapeError):
        FootShape(scan_kind="hologram")
    with pytest.raises(ShapeError):
        syn.synth_scan(DEFAULT, pose=np.diag([1.0, 1.0, -1.0, 1.0]))  # a mirror, not a motion
    with pytest.raises(ShapeError):
        syn.synth_scan(DEFAULT, units=Units.AUTO)
    shape = FootShape(side="left", scan_kind="plantar", foot_length_mm=250)
    assert shape.side is Side.LEFT and shape.scan_kind is ScanKind.PLANTAR
    assert isinstance(shape.foot_length_mm, float)


def test_random_shapes_cover_every_range_and_are_consistent():
    rng = np.random.default_rng(0)
    shapes = [syn.random_shape(rng) for _ in range(400)]
    for name, (lo, hi) in syn.RANGES.items():
        values = np.array([getattr(s, name) for s in shapes])
        assert values.min() < lo + 0.1 * (hi - lo), name
        assert values.max() > hi - 0.1 * (hi - lo), name
    assert {s.side for s in shapes} == {Side.LEFT, Side.RIGHT}
    assert {s.scan_kind for s in shapes} == {ScanKind.FULL, ScanKind.PLANTAR}
    arch = np.array([s.medial_arch_height_mm for s in shapes])
    contact = np.array([s.arch_contact_width_mm for s in shapes])
    assert np.corrcoef(arch, contact)[0, 1] < -0.5  # lower arches stand on more midfoot
    again = syn.random_shape(np.random.default_rng(0))
    assert again == shapes[0]
    assert syn.random_shape(rng, side=Side.LEFT, scan_kind=ScanKind.FULL).side is Side.LEFT


def test_random_shapes_build_valid_feet():
    rng = np.random.default_rng(12)
    for _ in range(3):
        shape = syn.random_shape(rng, scan_kind=ScanKind.FULL)
        mesh = syn.foot_mesh(shape)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
        t = syn.truth(shape)
        assert t["foot_length_mm"] == pytest.approx(shape.foot_length_mm, abs=1e-9)
        assert t["rearfoot_angle_deg"] == pytest.approx(shape.rearfoot_angle_deg, abs=0.5)
        assert 0.05 < t["arch_index"] < 0.4
        assert abs(t["ball_width_mm"] - shape.ball_width_mm) < 2.0  # eversion widens it


# -- files ------------------------------------------------------------------------------


def test_write_synthetic_writes_ply_and_truth(tmp_path):
    paths = syn.write_synthetic(tmp_path, n=2, seed=7, n_points=3_000)
    assert [p.name for p in paths] == ["synth_0.ply", "synth_1.ply"]
    for path in paths:
        raw = path.read_bytes()
        header, data = raw.split(b"end_header\n", 1)
        assert header.startswith(b"ply\nformat binary_little_endian 1.0\n")
        assert b"property double nz" in header
        values = np.frombuffer(data, "<f8").reshape(-1, 6)
        record = json.loads(path.with_suffix(".truth.json").read_text())
        shape = FootShape(**record["shape"])
        assert record["truth"] == syn.truth(shape)
        scan = syn.synth_scan(shape, n_points=record["n_points"], noise_mm=record["noise_mm"],
                              outlier_fraction=record["outlier_fraction"], pose="random",
                              seed=record["seed"])
        np.testing.assert_array_equal(values[:, :3], scan.points)
        np.testing.assert_array_equal(values[:, 3:], scan.normals)
        np.testing.assert_array_equal(np.array(record["pose"]), scan.pose)
        assert len(values) == round(3_000 * 1.01)  # 1 % outliers by default
