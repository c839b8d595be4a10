"""The insole's geometry, measured on the built solid and its mesh (not on the fields asked for)."""

from __future__ import annotations

import math
from functools import cache
from importlib import resources

import numpy as np
import pytest
import shapely
import shapely.affinity
import trimesh

from orthocad import frame, insole, measure, params, pipeline, prescribe, scan, surface, synthetic
from orthocad.enums import Construction, Side, Units
from orthocad.errors import InputError
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
def built(side: Side = Side.RIGHT, *, settings: tuple = (), case_id: str | None = None,
          **overrides) -> insole.Insole:
    """The insole for prescription ``overrides`` and parameter ``settings`` ((key, value), …)."""
    foot, plantar, m = case(side)
    rx = prescribe.prescribe(m, overrides=overrides)
    p = params.with_overrides(params.defaults(), dict(settings))
    return insole.build_insole(foot, rx, plantar=plantar, measurements=m, params=p,
                               case_id=case_id)


SHELL = (("insole.construction", "shell"),)


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
    assert left.top.surface().ev(-ys[keep], xs[keep]) == pytest.approx(z_left, abs=0.05)
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
    # A skive deepens the prescribed heel cup (12 → 14 mm): pinned to see the skive alone; so
    # is the cover, whose allowance rounds the skive's edges by its thickness.
    plain = built(top_cover_mm=0.0)
    skived = built(medial_skive_mm=4.0, medial_skive_angle_deg=20.0, heel_cup_depth_mm=12.0,
                   top_cover_mm=0.0)
    x = 0.12 * plain.foot_length_mm
    _, med = edges_at(plain, x)
    ys = med - np.array([3.0, 12.0, 16.0])  # inside the full depth; two points on the incline
    d = top_z(skived.mesh, [x] * 3, ys) - top_z(plain.mesh, [x] * 3, ys)
    assert d[0] == pytest.approx(4.0, abs=0.1)
    assert (d[1] - d[2]) / 4.0 == pytest.approx(math.tan(math.radians(20.0)), abs=0.03)


def test_shell_thickness_raises_the_top_and_thickens_the_shell():
    fl = built().foot_length_mm
    x, y = np.array([0.12, 0.68]) * fl, np.array([0.0, -5.0])  # heel seat, forefoot contact
    rise = top_z(built(device_length="sulcus", shell_thickness_mm=4.5).mesh, x, y) \
        - top_z(built(device_length="sulcus").mesh, x, y)
    assert rise == pytest.approx([1.5, 1.5], abs=0.1)
    thick = built(settings=SHELL, shell_thickness_mm=4.5)
    assert np.nanmedian(normal_thickness(thick, *over_hollow(thick))[0]) == pytest.approx(
        4.5 + insole.SHELL_MARGIN_MM, abs=0.05)


def test_arch_apex_moves_the_support_along_the_foot():
    plain = built()
    fl = plain.foot_length_mm
    xs = np.linspace(0.2, 0.6, 81) * fl
    ys = np.array([np.mean(edges_at(plain, x)) + 0.6 * np.diff(edges_at(plain, x))[0] / 2
                   for x in xs])
    peaks = []
    for apex in (35.0, 45.0):
        raised = built(arch_support_height_mm=25.0, arch_apex_pct=apex)
        rise = top_z(raised.mesh, xs, ys) - top_z(plain.mesh, xs, ys)
        peaks.append(xs[np.argmax(rise)])
        assert peaks[-1] == pytest.approx(apex / 100 * fl, abs=8.0)
    assert peaks[1] - peaks[0] == pytest.approx(0.10 * fl, abs=6.0)


def test_met_pad_position_moves_the_dome():
    plain = built(device_length="sulcus")
    fl = plain.foot_length_mm
    peaks = []
    for pct in (58.0, 66.0):
        padded = built(device_length="sulcus", met_pad_height_mm=5.0, met_pad_x_pct=pct)
        xs = np.linspace(0.45, 0.78, 67) * fl
        ys = np.array([np.mean(edges_at(plain, x)) + 0.1 * np.diff(edges_at(plain, x))[0] / 2
                       for x in xs])
        rise = top_z(padded.mesh, xs, ys) - top_z(plain.mesh, xs, ys)
        peaks.append(xs[np.argmax(rise)])
        assert rise.max() == pytest.approx(5.0, abs=0.5)
        assert peaks[-1] == pytest.approx(pct / 100 * fl, abs=3.0)
    assert peaks[1] > peaks[0]


def test_first_ray_cutout_removes_the_device_under_the_first_metatarsal_head():
    plain = built(device_length="sulcus", first_ray_cutout=False)
    cut = built(device_length="sulcus", first_ray_cutout=True)
    (m1x, m1y), (m5x, m5y) = cut.mth_line_mm
    under_mth1 = (m1x, m1y - 8.0)  # medial is +y: 8 mm inside the medial edge
    lateral = (m5x + 5.0, m5y + 10.0)
    assert np.isfinite(top_z(plain.mesh, [under_mth1[0]], [under_mth1[1]])[0])
    assert np.isnan(top_z(cut.mesh, [under_mth1[0]], [under_mth1[1]])[0])  # nothing there
    assert top_z(cut.mesh, [lateral[0]], [lateral[1]])[0] == pytest.approx(
        top_z(plain.mesh, [lateral[0]], [lateral[1]])[0], abs=0.05)
    # The notch starts behind the head and spans the first ray's width (from the foot's edge).
    notch = notch_of(plain, cut)
    along = notch.intersection(shapely.LineString([(0, m1y - 12.0), (500, m1y - 12.0)]))
    assert along.bounds[0] == pytest.approx(m1x - insole.FIRST_RAY_BEHIND_MM, abs=1.0)
    across = notch.intersection(shapely.LineString([(m1x - 6.0, -500), (m1x - 6.0, 500)]))
    assert across.bounds[1] == pytest.approx(m1y - insole.FIRST_RAY_WIDTH_MM, abs=1.0)
    assert cut.solid.isValid() and cut.mesh.is_watertight


def test_first_ray_cutout_of_a_left_insole_is_on_its_medial_minus_y_side():
    cut = built(Side.LEFT, device_length="sulcus", first_ray_cutout=True)
    plain = built(Side.LEFT, device_length="sulcus", first_ray_cutout=False)
    notch = notch_of(plain, cut)
    assert notch.area > 200.0
    assert notch.bounds[1] == pytest.approx(cut.mth_line_mm[0][1], abs=4.0)  # MTH1 at −y


def notch_of(plain: insole.Insole, cut: insole.Insole):
    """The region a cut-out removed; the rest of the outline differs by slivers only (the
    outline's simplification, 0.05 mm)."""
    difference = shapely.Polygon(plain.outline_mm).difference(shapely.Polygon(cut.outline_mm))
    pieces = sorted(getattr(difference, "geoms", [difference]), key=lambda g: -g.area)
    assert sum(g.area for g in pieces[1:]) < 2.0
    return pieces[0]


# --- top cover ------------------------------------------------------------------------------


def test_top_cover_allowance_keeps_level_ground_and_moves_walls_out_by_the_cover():
    cover = 3.0
    bare, covered = built(top_cover_mm=0.0), built(top_cover_mm=cover)
    assert covered.top_cover_mm == cover
    fl = bare.foot_length_mm
    # Level ground (the heel seat): the top stays, the cover lifts the foot by its thickness.
    seat = top_z(covered.mesh, [0.12 * fl], [0.0]) - top_z(bare.mesh, [0.12 * fl], [0.0])
    assert abs(seat[0]) < 0.05
    # The heel cup's wall drops: a wall of slope θ moves out by the cover's thickness along
    # its normal, cover·(1/cos θ − 1) down where it is plane (the cup's walls curve, more or
    # less, within a cover's thickness).
    x, y = top_points(bare, x_max=0.2 * fl)
    surface = bare.top.surface()
    slope = np.hypot(surface.ev(y, x, dy=1), surface.ev(y, x, dx=1))
    steep = (slope > 0.5) & (slope < 1.5)
    assert steep.sum() > 30
    drop = top_z(bare.mesh, x[steep], y[steep]) - top_z(covered.mesh, x[steep], y[steep])
    plane = cover * (np.sqrt(1.0 + slope[steep] ** 2) - 1.0)
    assert np.median(drop) == pytest.approx(np.median(plane), rel=0.25)
    assert np.all(drop > 0.2 * plane)
    # Device + cover = the prescribed surface (the bare top raised by the cover): every point
    # of it lies one cover's thickness from the covered device's top.
    x, y = top_points(bare, step=4.0)
    prescribed = np.column_stack([x, y, bare.top.surface().ev(y, x) + cover])
    _, distance, _ = trimesh.proximity.closest_point(covered.mesh, prescribed)
    assert np.median(distance) == pytest.approx(cover, abs=0.05)
    assert np.percentile(np.abs(distance - cover), 95) < 0.1


# --- construction ---------------------------------------------------------------------------


def test_shell_is_one_valid_solid_much_lighter_than_the_filled_device():
    filled, shell = built(), built(settings=SHELL)
    assert filled.construction is Construction.FILLED and filled.cavity is None
    assert shell.construction is Construction.SHELL and shell.cavity is not None
    assert shell.solid.isValid() and len(shell.solid.Solids()) == 1
    assert shell.mesh.is_watertight and shell.mesh.is_winding_consistent
    assert abs(shell.mesh_volume_mm3 - shell.volume_mm3) <= 0.01 * shell.volume_mm3
    assert shell.volume_mm3 < 0.75 * filled.volume_mm3
    # Hollowed underneath only: the foot meets the same top.
    assert np.array_equal(shell.top.z_mm, filled.top.z_mm)
    assert shell.min_thickness_mm >= shell.shell_thickness_mm


def test_shell_is_the_shell_thickness_along_the_normal_over_the_hollow():
    ins = built(settings=SHELL)
    x, y = over_hollow(ins)
    assert len(x) > 100
    measured, leaves_at = normal_thickness(ins, x, y)
    assert np.all(leaves_at > 0.4)  # through the shell's underside, not the floor
    shell = ins.shell_thickness_mm + insole.SHELL_MARGIN_MM  # (never less than asked)
    assert np.median(measured) == pytest.approx(shell, abs=0.05)
    assert np.abs(measured - shell).max() < 0.1
    # The library's own measure (on the splines) agrees with the mesh.
    assert insole.thickness_mm(ins, x, y) == pytest.approx(measured, abs=0.1)


def test_shell_stands_flat_on_its_solid_heel_and_its_distal_end():
    ins = built(settings=SHELL)
    fl = ins.foot_length_mm
    x, y = top_points(ins, x_max=insole.HEEL_BLOCK_PCT * fl - 2.0)
    assert np.abs(from_below(ins, x, y)).max() < 1e-6  # the heel: floor all across …
    assert np.all(crossings(ins, x, y) == 2)  # … and solid from it to the top
    x, y = over_hollow(ins)
    assert from_below(ins, x, y).min() > 0.4  # the arch: the shell's underside, above the floor
    floor = floor_region(ins)
    ahead = floor.intersection(shapely.box(0.5 * fl, -500, 500, 500))
    assert ahead.area > 300.0  # the forefoot end rests on the floor too
    assert floor.intersection(shapely.box(-500, -500, 0.2 * fl, 500)).area == pytest.approx(
        shapely.Polygon(ins.outline_mm).intersection(
            shapely.box(-500, -500, 0.2 * fl, 500)).area, rel=0.005)


def test_shell_with_a_forefoot_post_stands_on_a_solid_forefoot():
    ins = built(settings=SHELL, forefoot_post_deg=4.0, device_length="sulcus")
    fl = ins.foot_length_mm
    front = shapely.box(insole.FOREFOOT_BLOCK_PCT * fl + 1.0, -500, 500, 500)
    assert floor_region(ins).intersection(front).area == pytest.approx(
        shapely.Polygon(ins.outline_mm).intersection(front).area, rel=0.01)
    assert ins.solid.isValid() and ins.mesh.is_watertight


def test_left_shell_is_the_mirror_of_the_right():
    right, left = built(settings=SHELL), built(Side.LEFT, settings=SHELL)
    assert left.volume_mm3 == pytest.approx(right.volume_mm3, rel=0.02)
    assert left.solid.isValid() and left.mesh.is_watertight
    x, y = over_hollow(left)
    assert np.median(y) < 0  # the hollow under the medial arch: −y on a left insole
    assert np.median(normal_thickness(left, x, y)[0]) == pytest.approx(
        3.0 + insole.SHELL_MARGIN_MM, abs=0.05)


# --- thickness ------------------------------------------------------------------------------


def test_thickness_is_along_the_normal_and_a_steep_heel_cup_wall_holds_the_shell():
    ins = built(heel_cup_depth_mm=20.0)
    fl = ins.foot_length_mm
    x, y = top_points(ins, x_max=0.25 * fl, step=1.0)
    surface = ins.top.surface()
    slope = np.hypot(surface.ev(y, x, dy=1), surface.ev(y, x, dx=1))
    steep = slope > 1.0  # steeper than 45°
    assert steep.sum() > 50
    x, y = x[steep], y[steep]
    measured, _ = normal_thickness(ins, x, y)
    assert np.nanmin(measured) >= ins.shell_thickness_mm - 0.1  # the mesh's chords
    library = insole.thickness_mm(ins, x, y)
    # (the library traces the outline's polyline, the mesh the splines through it: a line
    # grazing the side wall may differ by a little more than the 0.06 mm between them)
    assert library == pytest.approx(measured, abs=0.2, rel=0.02)
    assert library.min() >= ins.shell_thickness_mm
    # Along the normal, not vertically: near the rim the line leaves through the side wall,
    # well short of the height over the floor.
    assert np.min(library / surface.ev(y, x)) < 0.8


def test_edge_band_is_reported_and_spared():
    ins = built(heel_cup_depth_mm=20.0)
    assert ins.edge_band_mm == ins.shell_thickness_mm
    # Inside the band the normal leaves through the side wall: thinner than the shell there.
    ring = shapely.Polygon(ins.outline_mm)
    band = ring.difference(ring.buffer(-ins.edge_band_mm))
    x0, y0, x1, y1 = band.bounds
    X, Y = np.meshgrid(np.arange(x0, x1, 0.5), np.arange(y0, y1, 0.5))
    keep = shapely.contains_xy(band, X, Y) & (X < 0.25 * ins.foot_length_mm)
    assert np.nanmin(insole.thickness_mm(ins, X[keep], Y[keep])) < ins.shell_thickness_mm


# --- engraving ------------------------------------------------------------------------------


def test_engraving_cuts_case_id_side_and_version_into_the_heel():
    import orthocad

    plain, engraved = built(), built(case_id="CASE-0042")
    e = engraved.engraving
    assert e.text == f"CASE-0042\nRIGHT orthocad {orthocad.__version__}"
    assert (e.height_mm, e.depth_mm) == (4.0, 0.4)
    assert engraved.solid.isValid() and len(engraved.solid.Solids()) == 1
    assert engraved.mesh.is_watertight and engraved.mesh.is_winding_consistent
    letters = letters_area(e)
    assert plain.volume_mm3 - engraved.volume_mm3 == pytest.approx(letters * e.depth_mm,
                                                                   rel=0.03)
    box = shapely.Polygon(e.box_mm)
    assert box.within(shapely.Polygon(engraved.outline_mm).buffer(-4.0))
    assert box.bounds[2] < insole.HEEL_BLOCK_PCT * engraved.foot_length_mm
    # From below: the letters' roofs at the engraving's depth, the floor around them.
    x0, y0, x1, y1 = box.bounds
    X, Y = np.meshgrid(np.arange(x0, x1, 0.25), np.arange(y0, y1, 0.25))
    z = from_below(engraved, X.ravel(), Y.ravel())
    roofs = np.abs(z - e.depth_mm) < 1e-3
    assert np.mean(roofs | (np.abs(z) < 1e-3)) > 0.999  # (rays grazing a letter's wall)
    assert roofs.mean() * box.area == pytest.approx(letters, rel=0.1)
    assert engraved.min_thickness_mm >= engraved.shell_thickness_mm


@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_engraving_reads_right_when_the_insole_is_turned_over(side):
    ins = built(side, case_id="CASE-0042")
    seen = roofs_from_below(ins)
    turned = shapely.affinity.scale(seen, 1.0, -1.0, origin=(0, 0))  # about the long axis
    text = text_outline(ins.engraving)

    def overlap(a, b):
        a = shapely.affinity.translate(a, *(-np.array(a.centroid.coords[0])))
        b = shapely.affinity.translate(b, *(-np.array(b.centroid.coords[0])))
        return a.intersection(b).area / a.union(b).area

    assert overlap(turned, text) > 0.9
    assert overlap(seen, text) < 0.6  # the engraving itself, seen from below, is mirrored


def test_shell_engraving_goes_under_the_solid_heel():
    ins = built(settings=SHELL, case_id="CASE-0042")
    assert ins.solid.isValid() and len(ins.solid.Solids()) == 1 and ins.mesh.is_watertight
    box = shapely.Polygon(ins.engraving.box_mm)
    assert box.bounds[2] < insole.HEEL_BLOCK_PCT * ins.foot_length_mm
    assert letters_area(ins.engraving) * 0.4 == pytest.approx(
        built(settings=SHELL).volume_mm3 - ins.volume_mm3, rel=0.03)


def test_long_case_ids_shrink_to_fit_the_heel():
    ins = built(case_id="K" * 40)
    assert insole._ENGRAVE_MIN_MM <= ins.engraving.height_mm < 4.0
    heel = shapely.Polygon(ins.outline_mm).intersection(
        shapely.box(-500, -500, insole.HEEL_BLOCK_PCT * ins.foot_length_mm, 500))
    assert shapely.Polygon(ins.engraving.box_mm).within(heel.buffer(-4.9))


def test_no_case_id_or_engraving_off_engraves_nothing():
    assert built().engraving is None
    off = built(settings=(("insole.engrave", False),), case_id="CASE-0042")
    assert off.engraving is None
    assert off.volume_mm3 == built().volume_mm3


@pytest.mark.parametrize("bad", ["john smith", "a/b", "Müller", "", "x" * 41, "id;rm -rf"])
def test_case_ids_other_than_letters_digits_dot_underscore_dash_are_refused(bad):
    foot, plantar, m = case()
    with pytest.raises(InputError, match="case id"):
        insole.build_insole(foot, prescribe.prescribe(m), plantar=plantar, measurements=m,
                            case_id=bad)


def test_the_font_is_bundled_with_its_licence_and_used():
    fonts = resources.files("orthocad").joinpath("data/fonts")
    assert fonts.joinpath("DejaVuSansMono-Bold.ttf").is_file()
    assert "Bitstream Vera" in fonts.joinpath("LICENSE").read_text("utf-8")
    readme = fonts.joinpath("README.md").read_text("utf-8")
    assert "fonts-dejavu-core" in readme and "2.37" in readme
    # Monospaced letters, so the bundled font (not a proportional fallback) laid them out.
    narrow = insole._glyphs("i.i", 4.0, np.zeros(2), mirrored=False).BoundingBox()
    wide = insole._glyphs("iWi", 4.0, np.zeros(2), mirrored=False).BoundingBox()
    assert narrow.xlen == pytest.approx(wide.xlen, abs=1e-6)


# --- helpers --------------------------------------------------------------------------------


def top_points(ins: insole.Insole, *, x_max: float = np.inf, step: float = 2.0):
    """(x, y) on a grid over the top, outside the edge band and the feathered band."""
    core = shapely.Polygon(ins.outline_mm).buffer(-ins.edge_band_mm)
    x0, y0, x1, y1 = core.bounds
    X, Y = np.meshgrid(np.arange(x0, min(x1, x_max), step), np.arange(y0, y1, step))
    keep = shapely.contains_xy(core, X, Y)
    if ins.feather_line_mm is not None:
        (px, py), (nx, ny) = ins.feather_line_mm
        keep &= (X - px) * nx + (Y - py) * ny < 0
    return X[keep], Y[keep]


def over_hollow(ins: insole.Insole, step: float = 3.0):
    """(x, y) on a grid over a shell's hollow, 4 mm inside its edges."""
    hollow = shapely.MultiPolygon([shapely.Polygon(r[0], r[1:]) for r in ins.cavity.regions_mm])
    inner = hollow.buffer(-4.0)
    x0, y0, x1, y1 = inner.bounds
    X, Y = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    keep = shapely.contains_xy(inner, X, Y)
    return X[keep], Y[keep]


def normal_thickness(ins: insole.Insole, x, y):
    """Thickness along the top's normal measured on the mesh: from the top point down the
    inward normal to the first triangle hit; also the height where the line leaves."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    surface = ins.top.surface()
    z = surface.ev(y, x)
    normal = np.column_stack([-surface.ev(y, x, dy=1), -surface.ev(y, x, dx=1), np.ones_like(z)])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    inset = 0.15  # start under the mesh's chords (tolerance 0.05 mm)
    start = np.column_stack([x, y, z]) - inset * normal
    where, ray, _ = ins.mesh.ray.intersects_location(start, -normal, multiple_hits=False)
    length, leaves = np.full(len(x), np.nan), np.full(len(x), np.nan)
    length[ray] = np.linalg.norm(where - start[ray], axis=1) + inset
    leaves[ray] = where[:, 2]
    return length, leaves


def from_below(ins: insole.Insole, x, y) -> np.ndarray:
    """Height of the first surface a vertical ray from under the floor meets at (x, y)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    start = np.column_stack([x, y, np.full(len(x), -1.0)])
    up = np.tile([0.0, 0.0, 1.0], (len(x), 1))
    where, ray, _ = ins.mesh.ray.intersects_location(start, up, multiple_hits=False)
    out = np.full(len(x), np.nan)
    out[ray] = where[:, 2]
    return out


def crossings(ins: insole.Insole, x, y) -> np.ndarray:
    """How many surfaces a vertical line through (x, y) crosses."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    start = np.column_stack([x, y, np.full(len(x), -1.0)])
    up = np.tile([0.0, 0.0, 1.0], (len(x), 1))
    _, ray, _ = ins.mesh.ray.intersects_location(start, up, multiple_hits=True)
    return np.bincount(ray, minlength=len(x))


def floor_region(ins: insole.Insole):
    """Where the device stands on z = 0: its downward faces there, as one region."""
    down = (ins.mesh.face_normals[:, 2] < -0.999) & \
        (np.abs(ins.mesh.triangles[:, :, 2]).max(axis=1) < 1e-6)
    return shapely.union_all(shapely.polygons(ins.mesh.triangles[down][:, :, :2]))


def roofs_from_below(ins: insole.Insole):
    """The engraved letters' roofs (downward faces at the engraving's depth) in the plane."""
    depth = ins.engraving.depth_mm
    roof = (ins.mesh.face_normals[:, 2] < -0.999) & \
        (np.abs(ins.mesh.triangles[:, :, 2] - depth).max(axis=1) < 1e-6)
    return shapely.union_all(shapely.polygons(ins.mesh.triangles[roof][:, :, :2]))


def text_outline(e: insole.Engraving):
    """The engraving's text as it reads, from the bundled font laid out on the XY plane."""
    from orthocad._native import cadquery

    cq = cadquery()
    font = str(resources.files("orthocad").joinpath("data/fonts/DejaVuSansMono-Bold.ttf"))
    faces = cq.Compound.makeText(e.text, e.height_mm, 0.0, fontPath=font, kind="bold")
    vertices, triangles = faces.tessellate(0.005)
    points = np.array([v.toTuple() for v in vertices])[:, :2]
    return shapely.union_all(shapely.polygons(points[np.array(triangles)]))


def letters_area(e: insole.Engraving) -> float:
    return text_outline(e).area


def test_the_sole_is_cut_down_to_the_plantar_slope_where_it_climbs_a_wall():
    """A flat sole at 5 mm meeting a vertical wall 40 mm tall: the wall is cut to the spec's
    plantar slope (60 degrees) rising from the sole's edge; the sole itself is untouched."""
    from orthocad.insole import _PLANTAR_SLOPE, _plantar_only

    step = 1.0
    z = np.full((30, 60), 5.0)
    z[:, 40:] = 40.0  # the wall: columns 40 and on
    cut = _plantar_only(z, step)
    np.testing.assert_array_equal(cut[:, :40], 5.0)
    expected = np.minimum(40.0, 5.0 + _PLANTAR_SLOPE * step * (np.arange(40, 60) - 39))
    np.testing.assert_allclose(cut[:, 40:], np.broadcast_to(expected, (30, 20)), atol=1e-9)
    assert math.isclose(_PLANTAR_SLOPE, math.sqrt(3.0))
