"""The insole's geometry, measured on the built solid and its mesh (not on the fields asked for)."""

from __future__ import annotations

import math
import time
from functools import cache

import numpy as np
import pytest
import shapely

from orthocad import frame, insole, measure, pipeline, prescribe, scan, surface, synthetic
from orthocad.enums import Side, Units
from orthocad.prescribe import DeviceLength

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@cache
def case(side: Side = Side.RIGHT):
    """A synthetic foot (60k points), framed, with its plantar grid and measurements."""
    synth = synthetic.synth_scan(synthetic.FootShape(side=side), n_points=60_000, seed=3)
    cleaned = pipeline.split_and_clean(scan.from_points(synth.points, units=Units.MM))
    foot = frame.canonical(cleaned[0], side=side)
    return foot, surface.plantar(foot), measure.measure(foot)


@cache
def built(side: Side = Side.RIGHT, **overrides) -> insole.Insole:
    foot, plantar, m = case(side)
    rx = prescribe.prescribe(m, overrides=overrides)
    return insole.build_insole(foot, rx, plantar=plantar, measurements=m)


def top_z(mesh, x, y) -> np.ndarray:
    """Height of the mesh's upper surface above (x, y): the highest upward triangle there."""
    up = mesh.face_normals[:, 2] > 1e-3
    tri = mesh.triangles[up]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    out = []
    for px, py in zip(np.atleast_1d(x), np.atleast_1d(y), strict=True):
        v0, v1 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]
        v2 = np.array([px, py]) - a[:, :2]
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
            t = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        hit = (s >= -1e-9) & (t >= -1e-9) & (s + t <= 1 + 1e-9) & (np.abs(den) > 1e-12)
        z = a[hit, 2] + s[hit] * (b[hit, 2] - a[hit, 2]) + t[hit] * (c[hit, 2] - a[hit, 2])
        out.append(z.max() if len(z) else np.nan)
    return np.array(out)


def edges_at(ins: insole.Insole, x: float) -> tuple[float, float]:
    """The outline's min and max y at x."""
    polygon = shapely.Polygon(ins.outline_mm)
    cut = polygon.intersection(shapely.LineString([(x, -500), (x, 500)]))
    return cut.bounds[1], cut.bounds[3]


def distal_line(ins: insole.Insole) -> tuple[np.ndarray, np.ndarray]:
    """A point (MTH5) of the metatarsal-head line and its unit normal pointing to the toes."""
    (m1x, m1y), (m5x, m5y) = ins.mth_line_mm
    along = np.array([m1x - m5x, m1y - m5y])
    normal = np.array([along[1], -along[0]]) / np.linalg.norm(along)
    return np.array([m5x, m5y]), (normal if normal[0] > 0 else -normal)


def heel_edges(ins: insole.Insole) -> tuple[float, float]:
    """The outline's lateral and medial extremes over 10–22 %FL (the rearfoot post's width)."""
    xs = np.linspace(0.10, 0.22, 25) * ins.foot_length_mm
    edges = np.array([edges_at(ins, x) for x in xs])
    return edges[:, 0].min(), edges[:, 1].max()


# --- the solid ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_one_valid_closed_solid_and_a_watertight_mesh_of_the_same_volume(side):
    from OCP.TopAbs import TopAbs_SHELL
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopoDS import TopoDS

    ins = built(side)
    assert ins.solid.isValid()
    assert len(ins.solid.Solids()) == 1
    shells = TopExp_Explorer(ins.solid.wrapped, TopAbs_SHELL)
    assert TopoDS.Shell_s(shells.Current()).Closed()
    shells.Next()
    assert not shells.More()
    assert ins.mesh.is_watertight and ins.mesh.is_winding_consistent
    assert ins.volume_mm3 > 50_000  # an adult three-quarter device: ~85 cm³ with the cup
    assert abs(ins.mesh_volume_mm3 - ins.volume_mm3) <= 0.01 * ins.volume_mm3
    assert math.isclose(ins.solid.Volume(), ins.volume_mm3, rel_tol=0.02)


def test_bottom_is_flat_at_z0_and_covers_the_outline():
    ins = built()
    v = ins.mesh.vertices
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-6)
    down = ins.mesh.face_normals[:, 2] < -0.999
    assert np.abs(ins.mesh.triangles[down][:, :, 2]).max() < 1e-6
    area = ins.mesh.area_faces[down].sum()
    assert area == pytest.approx(shapely.Polygon(ins.outline_mm).area, rel=0.005)
    # Nothing else faces down (the top never folds over; the walls are vertical up to the
    # chords of their triangles), and every vertex lies on or inside the outline.
    assert (ins.mesh.face_normals[:, 2] < -0.5).sum() == down.sum()
    # outline_mm is the polyline the outline's splines interpolate; between its points a
    # spline bulges out by its sagitta (measured 0.04–0.06 mm), so allow 0.25 mm.
    ring = shapely.Polygon(ins.outline_mm)
    outside = ~shapely.contains_xy(ring.buffer(0.25), v[:, 0], v[:, 1])
    assert not outside.any()


def test_output_frame_heel_at_origin_toes_forward():
    foot, _, _ = case()
    ins = built(device_length="full")
    lo, hi = ins.mesh.bounds
    margin = 3.0  # insole.margin_mm
    assert lo[0] == pytest.approx(-margin, abs=1.5)  # the heel at x = 0, plus the margin
    assert hi[0] == pytest.approx(foot.length_mm + margin, abs=4.0)
    assert ins.device_length is DeviceLength.FULL


def test_min_thickness_holds_the_shell():
    for overrides in ({}, {"shell_thickness_mm": 4.5}):
        ins = built(**overrides)
        shell = ins.shell_thickness_mm
        assert ins.min_thickness_mm >= shell
        # Independently, on the mesh: the top over the outline, off the walls and the feather.
        polygon = shapely.Polygon(ins.outline_mm).buffer(-1.0)
        (x0, y0), (x1, y1) = ins.mesh.bounds[0][:2], ins.mesh.bounds[1][:2]
        xs, ys = np.meshgrid(np.arange(x0, x1, 2.0), np.arange(y0, y1, 2.0))
        point, normal = distal_line(ins)
        feather = 7.0 + 10.0 + 0.5  # three_quarter_behind_mm + feather_mm, and half a mm
        before = (xs - point[0]) * normal[0] + (ys - point[1]) * normal[1] < -feather
        inside = shapely.contains_xy(polygon, xs, ys) & before
        z = top_z(ins.mesh, xs[inside], ys[inside])
        assert np.nanmin(z) >= shell - 1e-6


# --- prescription → geometry ---------------------------------------------------------------


@pytest.mark.parametrize("angle", [4.0, -4.0])
def test_rearfoot_post_raises_the_posted_heel_edge_by_width_tan_angle(angle):
    plain, posted = built(), built(rearfoot_post_deg=angle)
    x = 0.15 * plain.foot_length_mm
    lat, med = edges_at(plain, x)
    probe_y = np.array([lat + 3.0, med - 3.0])
    lift = top_z(posted.mesh, [x, x], probe_y) - top_z(plain.mesh, [x, x], probe_y)
    tan = math.tan(math.radians(abs(angle)))
    heel_lo, heel_hi = heel_edges(plain)
    if angle > 0:  # medial (+y) post: the medial edge rises, the lateral barely
        expected = tan * (probe_y - heel_lo)
        assert lift[1] > lift[0]
    else:
        expected = tan * (heel_hi - probe_y)
        assert lift[0] > lift[1]
    assert lift == pytest.approx(expected, abs=0.3)
    # The reported edge lift is the heel's width × tan(angle), signed + medial.
    assert posted.rearfoot_post_lift_mm == pytest.approx(
        math.copysign(tan * (heel_hi - heel_lo), angle), abs=0.3)
    # Blended to zero over the midfoot: nothing changes under the metatarsals' approach.
    xf = 0.6 * plain.foot_length_mm
    lat_f, med_f = edges_at(plain, xf)
    ys = np.linspace(lat_f + 5, med_f - 5, 5)
    assert np.abs(top_z(posted.mesh, [xf] * 5, ys) - top_z(plain.mesh, [xf] * 5, ys)).max() < 0.05


def test_left_medial_post_raises_the_minus_y_edge():
    plain, posted = built(Side.LEFT), built(Side.LEFT, rearfoot_post_deg=4.0)
    x = 0.15 * plain.foot_length_mm
    lo, hi = edges_at(plain, x)  # for a left insole medial is −y
    y = np.array([lo + 3.0, hi - 3.0])
    lift = top_z(posted.mesh, [x, x], y) - top_z(plain.mesh, [x, x], y)
    assert lift[0] > lift[1] + 0.8 * math.tan(math.radians(4.0)) * (hi - lo - 6.0)


def test_heel_lift_is_measured_at_the_heel_and_tapers_off():
    plain, lifted = built(), built(heel_lift_mm=5.0, lift_extent="heel")
    fl = plain.foot_length_mm
    x = np.array([0.10, 0.15, 0.62]) * fl
    y = np.zeros(3)
    diff = top_z(lifted.mesh, x, y) - top_z(plain.mesh, x, y)
    assert diff[:2] == pytest.approx([5.0, 5.0], abs=0.1)
    assert abs(diff[2]) < 0.1
    assert lifted.mesh.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-6)  # the bottom stays


def test_full_length_lift_lifts_the_forefoot_too():
    plain = built(device_length="full")
    lifted = built(device_length="full", heel_lift_mm=5.0, lift_extent="full")
    x = np.array([0.12, 0.5, 0.75]) * plain.foot_length_mm
    diff = top_z(lifted.mesh, x, np.zeros(3)) - top_z(plain.mesh, x, np.zeros(3))
    assert diff == pytest.approx([5.0, 5.0, 5.0], abs=0.1)


def test_heel_cup_depth_measured_rim_above_seat():
    for depth in (12.0, 20.0):
        ins = built(heel_cup_depth_mm=depth)
        fl = ins.foot_length_mm
        v = ins.mesh.vertices
        heel = v[:, 0] < 0.12 * fl
        rim = v[heel, 2].max()
        seat = top_z(ins.mesh, [0.12 * fl], [0.0])[0]
        assert rim - seat == pytest.approx(depth, abs=1.5), depth
        assert ins.heel_cup_depth_mm == depth


def test_left_insole_is_the_mirror_of_the_right():
    right, left = built(Side.RIGHT), built(Side.LEFT)
    assert left.side is Side.LEFT and right.side is Side.RIGHT
    assert left.volume_mm3 == pytest.approx(right.volume_mm3, rel=0.01)
    r_lo, r_hi = right.mesh.bounds
    l_lo, l_hi = left.mesh.bounds
    assert (l_lo[1], l_hi[1]) == pytest.approx((-r_hi[1], -r_lo[1]), abs=1.0)
    fl = right.foot_length_mm
    xs, ys = np.meshgrid(np.linspace(0.05, 0.6, 12) * fl, np.linspace(-25, 25, 6))
    keep = shapely.contains_xy(shapely.Polygon(right.outline_mm).buffer(-4), xs, ys)
    keep &= shapely.contains_xy(shapely.Polygon(left.outline_mm).buffer(-4), xs, -ys)
    z_right = top_z(right.mesh, xs[keep], ys[keep])
    z_left = top_z(left.mesh, xs[keep], -ys[keep])
    assert np.median(np.abs(z_left - z_right)) < 0.3  # two scans of one shape, mirrored
    # The returned grid is in the output frame too: it is the surface of the left solid.
    assert left.top.at(xs[keep], -ys[keep]) == pytest.approx(z_left, abs=0.05)
    assert left.mth_line_mm[0][1] < 0 < left.mth_line_mm[1][1]  # MTH1 medial = −y


def test_device_lengths_and_the_three_quarter_end():
    three = built()
    assert three.device_length is DeviceLength.THREE_QUARTER
    point, normal = distal_line(three)
    ahead = (three.outline_mm - point) @ normal
    assert ahead.max() == pytest.approx(-7.0, abs=0.5)  # insole.three_quarter_behind_mm
    sulcus, full = built(device_length="sulcus"), built(device_length="full")
    assert three.mesh.bounds[1][0] < sulcus.mesh.bounds[1][0] < full.mesh.bounds[1][0]
    # The feathered edge: the device thins to ~1 mm at its distal end.
    tip = three.outline_mm[np.argmax(ahead)]
    inward = tip - 1.5 * normal
    assert top_z(three.mesh, [inward[0]], [inward[1]])[0] < 2.0


@pytest.mark.parametrize(("overrides", "where", "rise"), [
    ({"arch_support_height_mm": 25.0}, (0.40, 0.7), 3.0),
    ({"medial_flange_mm": 10.0}, (0.42, 0.93), 4.0),
    ({"lateral_flange_mm": 8.0}, (0.42, -0.93), 3.0),
    # (a skive deepens the prescribed heel cup to 14 mm: pinned here to see the skive alone)
    ({"medial_skive_mm": 4.0, "medial_skive_angle_deg": 20.0, "heel_cup_depth_mm": 12.0},
     (0.12, 0.75), 3.0),
    ({"met_pad_height_mm": 5.0, "met_pad_x_pct": 62.0, "device_length": "sulcus"},
     (0.62, 0.1), 4.5),
    ({"forefoot_post_deg": 4.0, "device_length": "sulcus"}, (0.70, 0.8), 3.0),
])
def test_each_modification_raises_the_top_where_it_acts(overrides, where, rise):
    base = {k: v for k, v in overrides.items() if k == "device_length"}
    plain, changed = built(**base), built(**overrides)
    x = where[0] * plain.foot_length_mm
    lat, med = edges_at(plain, x)
    y = (lat + med) / 2 + where[1] * (med - lat) / 2
    diff = top_z(changed.mesh, [x], [y])[0] - top_z(plain.mesh, [x], [y])[0]
    assert diff >= rise, (overrides, diff)
    # Elsewhere (the lateral heel) nothing moves.
    xl = 0.12 * plain.foot_length_mm
    lat_h, _ = edges_at(plain, xl)
    far = top_z(changed.mesh, [xl], [lat_h + 20.0])[0] - top_z(plain.mesh, [xl], [lat_h + 20.0])[0]
    assert abs(far) < 0.2


def test_skive_is_a_plane_at_its_angle_and_depth_on_the_medial_heel():
    plain = built()
    # A skive deepens the prescribed heel cup (12 → 14 mm): pinned to see the skive alone.
    skived = built(medial_skive_mm=4.0, medial_skive_angle_deg=20.0, heel_cup_depth_mm=12.0)
    x = 0.12 * plain.foot_length_mm
    _, med = edges_at(plain, x)
    ys = med - np.array([3.0, 12.0, 16.0])  # inside the full depth; two points on the incline
    d = top_z(skived.mesh, [x] * 3, ys) - top_z(plain.mesh, [x] * 3, ys)
    assert d[0] == pytest.approx(4.0, abs=0.1)
    assert (d[1] - d[2]) / 4.0 == pytest.approx(math.tan(math.radians(20.0)), abs=0.03)


def test_build_time():
    foot, plantar, m = case()
    rx = prescribe.prescribe(m, overrides={"rearfoot_post_deg": 4.0})
    from orthocad._native import cadquery

    cadquery()
    start = time.perf_counter()
    insole.build_insole(foot, rx, plantar=plantar, measurements=m)
    assert time.perf_counter() - start < 2.0  # ~0.4 s idle; margin for a loaded runner
