"""Tests of orthocad.scan: readers and writers, units, cleaning, splitting, bad input.

The feet here are simple stand-ins with known geometry (a half-buried
ellipsoid: 260 mm long, 100 mm wide, 65 mm high, with a flat contact patch
on the ground), so every expected number follows from the construction.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orthocad import scan
from orthocad.enums import Units
from orthocad.errors import (
    InputError,
    NotAFootError,
    OrthocadError,
    ParameterError,
    ScanReadError,
    UnitsError,
)

SCANS = Path(__file__).resolve().parents[1] / "scans"
TECHMED = SCANS / "techmed3d_plantar_right.obj"
FIND = SCANS / "find_template_left.obj"

# The stand-in foot: ellipsoid semi-axes and centre height (mm); its bottom is
# flattened onto z = 0 (the contact patch), its ground-level outline is the
# ellipse ((x - A) / A)^2 + (y / B)^2 = 1.
A, B, C, ZC = 130.0, 50.0, 35.0, 30.0
LENGTH_MM = 2 * A


def foot(
    n: int = 20_000,
    *,
    seed: int = 0,
    plantar: bool = False,
    floor: bool = False,
    noise_mm: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points and outward normals of the stand-in foot, optionally only its
    lower 30 mm (a plantar scan), optionally on a 500 x 340 mm floor patch
    sampled every 3 mm (none under the contact patch, which hides it)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1)[:, None]
    points = direction * [A, B, C] + [A, 0.0, ZC]
    normals = direction / [A, B, C]
    normals /= np.linalg.norm(normals, axis=1)[:, None]
    sole = points[:, 2] < 0
    points[sole, 2] = 0.0
    normals[sole] = [0.0, 0.0, -1.0]
    if plantar:
        keep = points[:, 2] < 30
        points, normals = points[keep], normals[keep]
    if floor:
        x, y = np.meshgrid(np.arange(-120.0, 380.0, 3.0), np.arange(-170.0, 170.0, 3.0))
        ground = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
        ground = ground[((ground[:, 0] - A) / A) ** 2 + (ground[:, 1] / B) ** 2 > 0.3]
        points = np.vstack([points, ground])
        normals = np.vstack([normals, np.tile([0.0, 0.0, 1.0], (len(ground), 1))])
    if noise_mm:
        points = points + rng.normal(scale=noise_mm, size=points.shape)
    return points, normals


def rotation(seed: int) -> np.ndarray:
    """A random rotation matrix (from a random unit quaternion)."""
    w, x, y, z = np.random.default_rng(seed).normal(size=4)
    w, x, y, z = np.array([w, x, y, z]) / np.linalg.norm([w, x, y, z])
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def assert_one_line(error: pytest.ExceptionInfo[OrthocadError], name: str) -> str:
    """Every message: one line, starting with the input's name, then problem; fix."""
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: ")
    assert "; " in message
    return message


# --------------------------------------------------------------------------- round trips


def _arrays(seed: int, n: int, m: int, scale: float, with_normals: bool):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)) * scale
    faces = rng.integers(0, n, size=(m, 3)) if m else None
    normals = None
    if with_normals:
        normals = rng.normal(size=(n, 3))
        normals /= np.linalg.norm(normals, axis=1)[:, None]
    return points, faces, normals


FACES_KEPT = {".ply", ".obj", ".stl", ".npz"}
NORMALS_KEPT = {".ply", ".pcd", ".xyz", ".txt", ".csv", ".obj", ".npy", ".npz"}
TEXT = {".xyz", ".txt", ".csv", ".obj"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "ascii"])
@pytest.mark.parametrize("suffix", sorted(scan.WRITERS))
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    m=st.integers(0, 30),
    scale=st.sampled_from([1e-3, 1.0, 300.0, 1e5]),
    with_normals=st.booleans(),
)
def test_every_writer_round_trips_through_its_reader(
    suffix, binary, seed, n, m, scale, with_normals
):
    points, faces, normals = _arrays(seed, n, m, scale, with_normals)
    if suffix == ".stl" and faces is None:
        faces = np.array([[0, 0, 0]])
    raw = scan.RawScan(points, faces, normals)
    back = scan.READERS[suffix](scan.WRITERS[suffix](raw, binary=binary), f"x{suffix}")

    text = suffix in TEXT or (not binary and suffix in {".ply", ".pcd", ".stl"})
    # Text keeps 9 significant digits; binary is exact (STL: its float32).
    if suffix == ".stl":  # vertices come back merged and renumbered: compare corners
        if text:
            np.testing.assert_allclose(back.points[back.faces], points[faces], rtol=1e-8)
        else:
            expected = points[faces].astype(np.float32).astype(np.float64)
            np.testing.assert_array_equal(back.points[back.faces], expected)
        assert back.normals is None
        return
    if text:
        np.testing.assert_allclose(back.points, points, rtol=1e-8)
    else:
        np.testing.assert_array_equal(back.points, points)
    if suffix in FACES_KEPT and faces is not None:
        np.testing.assert_array_equal(back.faces, faces)
    else:
        assert back.faces is None
    if suffix in NORMALS_KEPT and normals is not None:
        np.testing.assert_allclose(back.normals, normals, rtol=1e-8, atol=1e-15)
    else:
        assert back.normals is None


@pytest.mark.parametrize("suffix", sorted(scan.WRITERS))
def test_write_then_read_a_foot_in_every_format(tmp_path, suffix):
    points, normals = foot(3000, plantar=False)
    faces = np.arange(3000).reshape(-1, 3)
    path = scan.write(tmp_path / f"foot{suffix}", points, faces=faces, normals=normals)
    assert path == tmp_path / f"foot{suffix}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    back = scan.read(path)
    assert back.units is Units.MM and back.units_detected
    assert back.source == path
    assert back.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    if suffix == ".stl":
        np.testing.assert_allclose(back.points_mm[back.faces], points[faces], atol=1e-4)
        return
    np.testing.assert_allclose(back.points_mm, points, rtol=1e-8, atol=1e-9)
    if suffix in FACES_KEPT:
        np.testing.assert_array_equal(back.faces, faces)
    if suffix in NORMALS_KEPT:
        np.testing.assert_allclose(back.normals, normals, rtol=1e-8, atol=1e-12)


def test_write_takes_a_scan_with_its_faces_and_normals(tmp_path):
    points, normals = foot(3000)
    faces = np.arange(3000).reshape(-1, 3)
    source = scan.from_points(points, faces=faces, normals=normals)
    back = scan.read(scan.write(tmp_path / "s.ply", source, binary=False))
    np.testing.assert_allclose(back.points_mm, points, rtol=1e-8)
    np.testing.assert_array_equal(back.faces, faces)
    np.testing.assert_allclose(back.normals, normals, rtol=1e-8, atol=1e-12)


def test_write_refuses_what_the_format_cannot_hold(tmp_path):
    points, _ = foot(3000)
    with pytest.raises(InputError) as error:
        scan.write(tmp_path / "a.stl", points)
    assert "STL holds triangles only" in assert_one_line(error, "a.stl")
    with pytest.raises(InputError) as error:
        scan.write(tmp_path / "a.vrml", points)
    assert "use one of .csv, .npy, .npz, .obj, .pcd, .ply, .stl, .txt, .xyz" in str(error.value)
    with pytest.raises(InputError, match="does not exist"):
        scan.write(tmp_path / "no" / "a.ply", points)
    assert list(tmp_path.iterdir()) == []


def test_registry_is_keyed_by_suffix_and_extensible():
    assert scan.SUPPORTED_SUFFIXES == (
        ".csv", ".npy", ".npz", ".obj", ".pcd", ".ply", ".stl", ".txt", ".xyz"
    )
    assert set(scan.WRITERS) == set(scan.READERS)

    @scan.reader(".TEST")
    def _read_test(data: bytes, name: str) -> scan.RawScan:
        return scan.RawScan(np.zeros((1, 3)))

    try:
        assert scan.READERS[".test"] is _read_test
    finally:
        del scan.READERS[".test"]


# --------------------------------------------------------------------------- format details


def test_ply_big_endian_with_quads_and_extra_properties():
    # Binary big-endian; a colour property between x y z and the normals; a
    # quad among triangles (rows of mixed length); an edge element after.
    vertex = np.zeros(4, [("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("red", "u1"),
                          ("nx", ">f4"), ("ny", ">f4"), ("nz", ">f4")])
    vertex["x"], vertex["y"], vertex["z"] = [0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]
    vertex["nz"] = 1
    quad = struct.pack(">B4i", 4, 0, 1, 2, 3)
    triangle = struct.pack(">B3i", 3, 0, 2, 3)
    header = (
        b"ply\nformat binary_big_endian 1.0\ncomment made by hand\nelement vertex 4\n"
        b"property float x\nproperty float y\nproperty float z\nproperty uchar red\n"
        b"property float nx\nproperty float ny\nproperty float nz\n"
        b"element face 2\nproperty list uchar int vertex_indices\n"
        b"element edge 1\nproperty int vertex1\nproperty int vertex2\nend_header\n"
    )
    data = header + vertex.tobytes() + quad + triangle + struct.pack(">2i", 0, 1)
    raw = scan.READERS[".ply"](data, "q.ply")
    np.testing.assert_array_equal(raw.points[:, :2], [[0, 0], [1, 0], [1, 1], [0, 1]])
    np.testing.assert_array_equal(raw.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    np.testing.assert_array_equal(raw.normals, np.tile([0, 0, 1.0], (4, 1)))


def test_ply_ascii_with_polygons_and_crlf():
    text = (
        b"ply\r\nformat ascii 1.0\r\nelement vertex 5\r\nproperty double x\r\n"
        b"property double y\r\nproperty double z\r\nelement face 2\r\n"
        b"property list uchar int vertex_index\r\nend_header\r\n"
        b"0 0 0\r\n1 0 0\r\n1 1 0\r\n0 1 0\r\n2 2 2\r\n4 0 1 2 3\r\n3 1 2 4\r\n"
    )
    raw = scan.READERS[".ply"](text, "a.ply")
    assert raw.points.shape == (5, 3)
    np.testing.assert_array_equal(raw.faces, [[0, 1, 2], [0, 2, 3], [1, 2, 4]])


def test_ply_from_trimesh_and_to_trimesh_agree(tmp_path):
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2, radius=100.0)
    data = trimesh.exchange.ply.export_ply(mesh, encoding="binary")
    raw = scan.READERS[".ply"](data, "sphere.ply")
    np.testing.assert_allclose(raw.points, mesh.vertices, rtol=1e-6)
    np.testing.assert_array_equal(raw.faces, mesh.faces)
    for suffix in (".ply", ".obj", ".stl"):
        path = tmp_path / f"sphere{suffix}"
        path.write_bytes(scan.WRITERS[suffix](scan.RawScan(mesh.vertices, mesh.faces)))
        loaded = trimesh.load(path, process=False)
        np.testing.assert_allclose(loaded.vertices[loaded.faces], mesh.vertices[mesh.faces],
                                   rtol=1e-6)


def test_pcd_binary_compressed_written_by_open3d(tmp_path):
    from orthocad._native import open3d

    o3d = open3d()
    points, normals = foot(2000)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.normals = o3d.utility.Vector3dVector(normals)
    path = tmp_path / "c.pcd"
    assert o3d.io.write_point_cloud(str(path), cloud, compressed=True)
    assert b"DATA binary_compressed" in path.read_bytes()[:1000]
    raw = scan.READERS[".pcd"](path.read_bytes(), path.name)
    np.testing.assert_allclose(raw.points, points, rtol=1e-6)
    np.testing.assert_allclose(raw.normals, normals, atol=1e-6)


def test_obj_polygons_negative_indices_and_texture_corners():
    text = b"""# a square and a triangle
o thing
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0 0.5 0.5 0.5
vt 0 0
vn 0 0 1
f 1/1/1 2/1/1 3/1/1 4/1/1
f -4//1 -2//1 -1//1
l 1 2
"""
    raw = scan.READERS[".obj"](text, "o.obj")
    assert raw.points.shape == (4, 3)
    np.testing.assert_array_equal(raw.faces, [[0, 1, 2], [0, 2, 3], [0, 2, 3]])
    np.testing.assert_array_equal(raw.normals, np.tile([0, 0, 1.0], (4, 1)))


def test_stl_ascii_and_binary_merge_shared_corners():
    triangles = "".join(
        f" facet normal 0 0 1\n  outer loop\n{corners}  endloop\n endfacet\n"
        for corners in (
            "   vertex 0 0 0\n   vertex 1 0 0\n   vertex 1 1 0\n",
            "   vertex 0 0 0\n   vertex 1 1 0\n   vertex -0 1 0\n",
        )
    )
    raw = scan.READERS[".stl"](f"solid s\n{triangles}endsolid s\n".encode(), "s.stl")
    np.testing.assert_array_equal(raw.points, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(raw.faces, [[0, 1, 2], [0, 2, 3]])
    # A binary STL whose header starts with "solid" is still binary (its size says so).
    body = scan.WRITERS[".stl"](raw, binary=True)
    binary = b"solid but binary".ljust(80) + body[80:]
    again = scan.READERS[".stl"](binary, "b.stl")
    np.testing.assert_array_equal(again.points, raw.points)
    np.testing.assert_array_equal(again.faces, raw.faces)


def test_text_tables_header_commas_and_colour_columns():
    points, normals = foot(1500)
    rows = np.hstack([points, normals])
    with_header = b"# exported\nnx,ny,nz,x,y,z\n"
    body = "".join(f"{a},{b},{c},{d},{e},{f}\n" for d, e, f, a, b, c in rows[:5]).encode()
    raw = scan.READERS[".csv"](with_header + body, "h.csv")
    np.testing.assert_allclose(raw.points, points[:5])
    np.testing.assert_allclose(raw.normals, normals[:5])
    # x y z r g b: the last three are no unit vectors, so no normals.
    colour = np.hstack([points, np.full((len(points), 3), 200.0)])
    text = "\n".join(" ".join(map(str, r)) for r in colour).encode()
    raw = scan.READERS[".xyz"](text, "c.xyz")
    np.testing.assert_allclose(raw.points, points)
    assert raw.normals is None
    # A point count on the first line (.pts style) is a header, not a point.
    raw = scan.READERS[".txt"](b"2\n1 2 3\n4 5 6\n", "n.txt")
    np.testing.assert_array_equal(raw.points, [[1, 2, 3], [4, 5, 6]])


def test_npy_and_npz_variants():
    points, normals = foot(1200)
    buffer = scan.WRITERS[".npy"](scan.RawScan(points, None, normals))
    raw = scan.READERS[".npy"](buffer, "a.npy")
    np.testing.assert_array_equal(raw.points, points)
    np.testing.assert_allclose(raw.normals, normals, rtol=1e-12)
    stream = io.BytesIO()
    np.savez_compressed(stream, vertices=points.astype(np.float32), faces=np.array([[0, 1, 2]]))
    raw = scan.READERS[".npz"](stream.getvalue(), "b.npz")
    np.testing.assert_array_equal(raw.points, points.astype(np.float32))
    np.testing.assert_array_equal(raw.faces, [[0, 1, 2]])


# --------------------------------------------------------------------------- real scans


def _readme_sha256() -> dict[str, str]:
    text = (SCANS / "README.md").read_text()
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M)}


def test_real_scans_match_their_recorded_sha256_and_carry_licences():
    recorded = _readme_sha256()
    assert set(recorded) == {
        "techmed3d_plantar_right.obj",
        "find_template_left.obj",
        "find_template_sole_faces.npy",
        "find_template_keypoints.csv",
    }
    for name, digest in recorded.items():
        assert hashlib.sha256((SCANS / name).read_bytes()).hexdigest() == digest
    for licence in ("LICENSE-insoleTilter.txt", "LICENSE-FOCUS.txt"):
        assert "MIT License" in (SCANS / licence).read_text()


def test_techmed_plantar_scan_reads_in_millimetres_with_faces():
    techmed = scan.read(TECHMED)
    assert techmed.units is Units.MM and techmed.units_detected
    assert techmed.points_mm.shape == (6620, 3)
    assert techmed.faces.shape == (12721, 3)
    assert techmed.normals.shape == (6620, 3)
    assert techmed.sha256 == _readme_sha256()[TECHMED.name]
    np.testing.assert_allclose(np.ptp(techmed.points_mm, axis=0), [274.352, 105.228, 39.944],
                               atol=1e-3)
    # The sole faces down: its normals point -z (the scanner's convention).
    assert np.median(techmed.normals[techmed.points_mm[:, 2] < 1.0, 2]) < -0.9

    cleaned = scan.clean(techmed)
    assert cleaned.support_plane is None  # the contact area is no floor
    assert cleaned.dropped["floor"] == 0 and cleaned.dropped["voxel"] == 0
    assert cleaned.faces is not None and len(cleaned.faces) > 12_000  # a sparse mesh keeps them
    assert cleaned.faces.max() < len(cleaned.points_mm)
    [one] = scan.split_feet(cleaned)
    assert one is cleaned


def test_find_template_is_detected_as_metres():
    find = scan.read(FIND)
    assert find.units is Units.M and find.units_detected
    assert find.points_mm.shape == (44_395, 3)
    assert find.faces.shape == (88_786, 3)
    assert find.normals is None
    np.testing.assert_allclose(np.ptp(find.points_mm, axis=0), [264.186, 96.502, 150.085],
                               atol=1e-3)
    assert scan.read(FIND, units="m").points_mm.tolist() == find.points_mm.tolist()


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize("units", [Units.MM, Units.CM, Units.M, Units.IN])
def test_units_detected_from_the_foot_not_the_floor(units):
    # Judged by the whole cloud (the 500 mm floor patch), the units would come
    # out wrong (19.7 units, read as cm, make 197 mm) or not at all.
    points, normals = foot(20_000, floor=True, noise_mm=0.3)
    moved = points @ rotation(7).T + [40.0, -900.0, 250.0]
    found = scan.from_points(moved / units.to_mm, normals=normals @ rotation(7).T)
    assert found.units is units and found.units_detected
    np.testing.assert_allclose(found.points_mm, moved, rtol=1e-12, atol=1e-9)


def test_ambiguous_size_asks_for_units():
    points, _ = foot(5000)
    with pytest.raises(UnitsError) as error:  # 15.3 units: 153 mm in cm, 389 mm in inches
        scan.from_points(points * 15.3 / LENGTH_MM)
    message = assert_one_line(error, "points")
    assert "cm (153 mm) or in (389 mm)" in message and "--units" in message


def test_no_foot_size_in_any_unit_asks_for_units():
    points, _ = foot(5000)
    with pytest.raises(UnitsError) as error:
        scan.from_points(points * 1.0 / LENGTH_MM)
    assert "--units mm|cm|m|in" in assert_one_line(error, "points")


def test_explicit_units_are_used_and_checked(tmp_path):
    points, _ = foot(5000)
    path = scan.write(tmp_path / "foot.xyz", points / 10)
    given_units = scan.read(path, units=Units.CM)
    assert given_units.units is Units.CM and not given_units.units_detected
    np.testing.assert_allclose(given_units.points_mm, points, rtol=1e-8)
    with pytest.raises(NotAFootError) as error:
        scan.read(path, units="m")
    message = assert_one_line(error, "foot.xyz")
    assert re.search(r"in m the foot is 2[56],\d{3} mm long", message) and "--units" in message
    with pytest.raises(UnitsError, match="unknown units 'furlong'"):
        scan.read(path, units="furlong")


# --------------------------------------------------------------------------- cleaning


def test_floor_is_found_removed_and_kept_as_support_plane():
    turn, shift = rotation(3), np.array([100.0, -50.0, 20.0])
    points, normals = foot(60_000, floor=True, noise_mm=0.5)
    n_floor = len(points) - 60_000
    source = scan.from_points(points @ turn.T + shift, normals=normals @ turn.T)
    cleaned = scan.clean(source)

    plane = cleaned.support_plane
    assert plane is not None
    np.testing.assert_allclose(plane.normal, turn @ [0, 0, 1.0], atol=1e-3)  # toward the foot
    assert abs(plane.distance_mm(shift[None])[0]) < 0.1  # the floor is z = 0, moved
    assert 0.3 < plane.residual_mm < 0.7  # the 0.5 mm noise
    assert cleaned.dropped["floor"] >= 0.98 * n_floor

    local = (cleaned.points_mm - shift) @ turn
    outside = ((local[:, 0] - A) / A) ** 2 + (local[:, 1] / B) ** 2 > 1.03
    assert not (outside & (local[:, 2] < 3)).any()  # no floor left beside the foot
    # The sole's contact patch, in the floor's plane, is kept: as many points
    # there as when the floor is left alone (outlier removal, whose statistics
    # the floor's points shift, is off for this comparison).
    counts = []
    for remove_floor in (True, False):
        result = scan.clean(source, outlier_neighbors=0, remove_floor=remove_floor)
        local_points = (result.points_mm - shift) @ turn
        contact = ((local_points[:, 0] - A) / A) ** 2 + (local_points[:, 1] / B) ** 2 < 0.2
        counts.append((contact & (np.abs(local_points[:, 2]) < 1.5)).sum())
    assert counts[0] > 2000 and counts[0] == counts[1]
    # The foot itself survives whole: its length and width within the noise.
    np.testing.assert_allclose(np.ptp(local, axis=0)[:2], [2 * A, 2 * B], atol=2.5)


def test_no_floor_on_a_plantar_scan_or_a_foot_alone():
    for points, normals in (foot(20_000, plantar=True), foot(20_000)):
        cleaned = scan.clean(scan.from_points(points, normals=normals))
        assert cleaned.support_plane is None
        assert cleaned.dropped["floor"] == 0 and cleaned.dropped["below_floor"] == 0
        assert cleaned.points_mm[:, 2].min() == 0.0  # the flat contact patch is still there


def test_clean_drops_non_finite_points_and_outliers_and_counts_them():
    points, normals = foot(20_000)
    rng = np.random.default_rng(5)
    stray = rng.uniform([-300, -300, 150], [600, 300, 400], size=(100, 3))
    nan_rows = np.full((50, 3), np.nan)
    cloud = np.vstack([points, stray, nan_rows])
    source = scan.from_points(cloud)
    cleaned = scan.clean(source, remove_floor=False)
    assert cleaned.dropped["non_finite"] == 50
    assert cleaned.dropped["outliers"] >= 100
    assert "floor" not in cleaned.dropped
    assert np.isfinite(cleaned.points_mm).all()
    assert cleaned.points_mm[:, 2].max() < 66.0  # every stray point is gone
    assert cleaned.faces is None and cleaned.normals is None
    # Every point is accounted for: kept, or dropped by one of the steps.
    assert cleaned.dropped["voxel"] > 0
    assert len(cleaned.points_mm) == 20_150 - sum(cleaned.dropped.values())


def test_clean_keeps_normals_unit_and_renumbers_faces_of_a_sparse_mesh():
    points, normals = foot(6000)
    faces = np.random.default_rng(1).integers(0, 6000, size=(4000, 3))
    points[17] = np.nan  # the faces using vertex 17 must go, the rest be renumbered
    source = scan.from_points(points, faces=faces, normals=normals)
    cleaned = scan.clean(source, voxel_mm=0.1, outlier_neighbors=0, remove_floor=False)
    assert cleaned.dropped == {"non_finite": 1, "voxel": 0}
    kept = faces[~(faces == 17).any(axis=1)]
    np.testing.assert_array_equal(cleaned.faces, np.where(kept > 17, kept - 1, kept))
    np.testing.assert_allclose(np.linalg.norm(cleaned.normals, axis=1), 1.0)
    # A voxel that halves the mesh is applied, and then the faces are gone.
    dense = scan.clean(source, voxel_mm=5.0, outlier_neighbors=0, remove_floor=False)
    assert dense.faces is None and dense.dropped["voxel"] > 3000
    np.testing.assert_allclose(np.linalg.norm(dense.normals, axis=1), 1.0)


def test_inputs_are_never_mutated():
    points, normals = foot(8000, floor=True)
    faces = np.arange(3 * 1000).reshape(-1, 3)
    copies = [a.copy() for a in (points, normals, faces)]
    source = scan.from_points(points, faces=faces, normals=normals)
    for array in (source.points_mm, source.faces, source.normals):
        assert not array.flags.writeable
    before = source.points_mm.copy()
    cleaned = scan.clean(source)
    scan.split_feet(cleaned)
    for array, copy in zip((points, normals, faces), copies, strict=True):
        np.testing.assert_array_equal(array, copy)
    np.testing.assert_array_equal(source.points_mm, before)
    assert source.dropped == {} and source.support_plane is None
    assert not cleaned.points_mm.flags.writeable


def test_clean_refuses_bad_options():
    source = scan.from_points(foot(3000)[0])
    with pytest.raises(ParameterError):
        scan.clean(source, voxel_mm=-1)
    with pytest.raises(ParameterError):
        scan.clean(source, outlier_neighbors=-2)
    with pytest.raises(ParameterError):
        scan.clean(source, outlier_std=0)
    with pytest.raises(NotAFootError, match="use a smaller voxel_mm"):
        scan.clean(source, voxel_mm=50)


# --------------------------------------------------------------------------- two feet


def test_two_feet_side_by_side_are_split():
    points, _ = foot(20_000)
    both = np.vstack([points + [0, 160, 0], points])  # 60 mm apart
    feet = scan.split_feet(scan.clean(scan.from_points(both)))
    assert len(feet) == 2
    for one, y in zip(feet, (0.0, 160.0), strict=True):  # ordered along the scanner's y
        assert abs(one.points_mm[:, 1].mean() - y) < 1.0
        np.testing.assert_allclose(np.ptp(one.points_mm, axis=0), [2 * A, 2 * B, 65], atol=1.0)
        assert one.dropped["debris"] == 0


def test_two_feet_on_a_floor_are_split_after_the_floor_goes():
    points, normals = foot(20_000, floor=True)
    both = np.vstack([points, points + [10, 200, 0]])
    feet = scan.split_feet(scan.clean(scan.from_points(both, normals=np.vstack([normals] * 2))))
    assert [round(one.points_mm[:, 1].mean()) for one in feet] == [0, 200]
    assert all(one.support_plane is not None for one in feet)


def test_touching_feet_are_refused():
    points, _ = foot(20_000)
    both = np.vstack([points, points + [5, 95, 0]])  # 5 mm overlap at the widest
    with pytest.raises(NotAFootError) as error:
        scan.split_feet(scan.clean(scan.from_points(both)))
    assert "two feet touching" in assert_one_line(error, "scan")


def test_debris_is_dropped_and_counted():
    points, _ = foot(20_000)
    crumb = np.random.default_rng(2).normal(size=(300, 3)) * 3 + [130, 150, 20]
    source = scan.clean(scan.from_points(np.vstack([points, crumb])), outlier_neighbors=0)
    [one] = scan.split_feet(source)
    assert one.dropped["debris"] > 200
    assert one.points_mm[:, 1].max() < 51


# --------------------------------------------------------------------------- bad input


def _bad(tmp_path: Path, name: str, data: bytes | None) -> Path:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    return path


def _ply_header(count: int, fmt: str = "binary_little_endian") -> bytes:
    return (
        f"ply\nformat {fmt} 1.0\nelement vertex {count}\nproperty float x\n"
        "property float y\nproperty float z\nend_header\n"
    ).encode()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        stream, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return stream.getvalue()


TRUNCATED_PLY = _ply_header(5000) + np.zeros((4000, 3), "<f4").tobytes()


@pytest.mark.parametrize(
    ("name", "data", "error", "words"),
    [
        ("gone.ply", None, ScanReadError, "file not found"),
        ("scan.xyz2", b"1 2 3\n", ScanReadError, "unknown file type '.xyz2'; use one of .csv"),
        ("empty.ply", b"", ScanReadError, "empty"),
        ("blank.xyz", b"\n \n", ScanReadError, "empty"),
        ("cut.ply", TRUNCATED_PLY, ScanReadError, "truncated"),
        ("huge.ply", _ply_header(10**12) + bytes(1200), ScanReadError, "1,000,000,000,000"),
        ("huge_ascii.ply", _ply_header(10**12, "ascii") + b"1 2 3\n", ScanReadError,
         "truncated"),
        ("noend.ply", b"ply\nformat ascii 1.0\nelement vertex 3\n", ScanReadError,
         "end_header"),
        ("words.xyz", b"1 2 3\n4 five 6\n", ScanReadError, "cannot read the rows as numbers"),
        ("ragged.csv", b"1,2,3\n4,5\n", ScanReadError, "cannot read the rows as numbers"),
        ("two.txt", b"1 2\n3 4\n", ScanReadError, "2 columns"),
        ("nan.xyz", b"nan nan nan\n" * 2000, ScanReadError, "no point has finite"),
        ("few.xyz", b"1 2 3\n" * 999 + b"nan 0 0\n" * 5000, NotAFootError, "only 999 points"),
        ("bad.obj", b"v 0 0 0\nv 1 0 0\nf 1 2 9\n", ScanReadError, "refers to vertex 9"),
        ("nov.obj", b"# nothing\n", ScanReadError, "no 'v'"),
        ("cut.stl", b"x" * 80 + struct.pack("<I", 1000) + bytes(500), ScanReadError,
         "truncated"),
        ("cut.pcd", b"VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
         b"WIDTH 9000000000\nHEIGHT 1\nPOINTS 9000000000\nDATA binary\n" + bytes(120),
         ScanReadError, "truncated"),
        ("huge.npy", _npy_header((10**12, 3)) + bytes(48), ScanReadError, "truncated"),
        ("junk.npz", b"PK not really a zip", ScanReadError, "not a readable .npz"),
        ("faces.ply", _ply_header(3, "ascii").replace(b"end_header", b"element face 1\n"
         b"property list uchar int vertex_indices\nend_header") + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
         ScanReadError, "refers to vertex 7"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, name, data, error, words):
    path = _bad(tmp_path, name, data)
    tracemalloc.start()
    try:
        with pytest.raises(error) as caught:
            scan.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6  # a header's claim never turns into an allocation
    assert words in assert_one_line(caught, name)


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "scan.ply"
    folder.mkdir()
    with pytest.raises(ScanReadError) as error:
        scan.read(folder)
    assert "is a directory" in assert_one_line(error, "scan.ply")


def test_not_foot_sized_with_explicit_units_names_the_size(tmp_path):
    points, _ = foot(3000)
    path = scan.write(tmp_path / "tiny.npy", points / 100)  # 2.6 mm "foot"
    with pytest.raises(NotAFootError) as error:
        scan.read(path, units=Units.MM)
    assert "2.6 mm long" in assert_one_line(error, "tiny.npy")


def test_bad_arrays_are_refused():
    with pytest.raises(ScanReadError, match="shape"):
        scan.from_points(np.zeros((5000, 2)))
    with pytest.raises(ScanReadError, match="one normal per point"):
        scan.from_points(foot(3000)[0], normals=np.zeros((10, 3)))
    with pytest.raises(NotAFootError, match="only 1 distinct point;"):
        scan.from_points(np.ones((2000, 3)))


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("suffix", sorted(scan.READERS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_corrupt_files_raise_scan_read_errors_only(suffix, data):
    # Truncations, flipped bytes, inserted junk and absurd header numbers in a
    # valid file: a reader returns arrays or raises ScanReadError, nothing else.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    points = rng.normal(size=(30, 3)) * 100
    normals = rng.normal(size=(30, 3))
    raw = scan.RawScan(points, rng.integers(0, 30, (20, 3)), normals / 10)
    blob = bytearray(scan.WRITERS[suffix](raw, binary=data.draw(st.booleans())))
    kind = data.draw(st.sampled_from(["cut", "flip", "insert", "number"]))
    at = data.draw(st.integers(0, len(blob) - 1))
    if kind == "cut":
        blob = blob[:at]
    elif kind == "flip":
        blob[at] = data.draw(st.integers(0, 255))
    elif kind == "insert":
        blob[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        numbers = list(re.finditer(rb"\d+", bytes(blob[:400])))
        if numbers:
            found = data.draw(st.sampled_from(numbers))
            huge = str(data.draw(st.sampled_from([0, 1, 7, 2**31, 2**64, 10**12]))).encode()
            blob[found.start():found.end()] = huge
    try:
        back = scan.READERS[suffix](bytes(blob), f"x{suffix}")
    except ScanReadError as error:
        assert "\n" not in str(error)
    else:
        assert back.points.ndim == 2 and back.points.shape[1] == 3


def test_absurd_coordinates_count_as_non_finite():
    points, _ = foot(5000)
    corrupt = np.vstack([points, [[1e300, 0, 0], [0, -np.inf, 0], [0, 0, 2e12]]])
    source = scan.from_points(corrupt)
    assert source.units is Units.MM
    cleaned = scan.clean(source)
    assert cleaned.dropped["non_finite"] == 3
    assert np.abs(cleaned.points_mm).max() < 300


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), units=st.sampled_from(list(scan._UNIT_CANDIDATES)))
def test_units_and_floor_do_not_depend_on_pose_or_units(seed, units):
    turn = rotation(seed)
    shift = np.random.default_rng(seed).uniform(-500, 500, 3)
    points, normals = foot(15_000, floor=True, noise_mm=0.3, seed=seed % 1000)
    moved = points @ turn.T + shift
    source = scan.from_points(moved / units.to_mm, normals=normals @ turn.T)
    assert source.units is units and source.units_detected
    cleaned = scan.clean(source)
    assert cleaned.support_plane is not None
    np.testing.assert_allclose(cleaned.support_plane.normal, turn[:, 2], atol=2e-3)
    assert abs(cleaned.support_plane.distance_mm(shift[None])[0]) < 0.2


# --------------------------------------------------------------------------- real scans in pairs


def test_real_plantar_scan_pairs_split_apart_and_refused_touching():
    techmed = scan.clean(scan.read(TECHMED))
    points, faces = techmed.points_mm, techmed.faces
    # A left foot (mirrored copy) 20 mm beside the right one: two feet, faces kept.
    mirrored = points * [1, -1, 1] + [0, points[:, 1].max() - points[:, 1].min() + 20, 0]
    pair = scan.from_points(np.vstack([points, mirrored]),
                            faces=np.vstack([faces, faces[:, ::-1] + len(points)]))
    right, left = scan.split_feet(pair)
    np.testing.assert_array_equal(right.points_mm, points)
    np.testing.assert_array_equal(right.faces, faces)
    np.testing.assert_allclose(left.points_mm, mirrored)
    # The same copy unmirrored, 10 mm closer than side by side: they touch.
    touching = np.vstack([points, points + [0, 95, 0]])
    with pytest.raises(NotAFootError, match="two feet touching"):
        scan.split_feet(scan.from_points(touching))


# --------------------------------------------------------------------------- synthetic feet


@pytest.fixture(scope="module")
def synthetic():
    return pytest.importorskip("orthocad.synthetic")


@pytest.mark.parametrize(
    ("kind", "floor", "units", "seed"),
    [
        ("full", True, Units.M, 1),
        ("full", False, Units.MM, 2),
        ("plantar", True, Units.CM, 3),
        ("plantar", False, Units.IN, 4),
    ],
)
def test_synthetic_scans_are_cleaned_to_the_foot(synthetic, kind, floor, units, seed):
    from scipy.spatial import cKDTree

    from orthocad.enums import ScanKind

    shape = synthetic.FootShape(scan_kind=ScanKind(kind))
    made = synthetic.synth_scan(shape, n_points=60_000, noise_mm=0.5, outlier_fraction=0.01,
                                floor=floor, pose="random", units=units, seed=seed)
    source = scan.from_points(made.points, normals=made.normals)
    assert source.units is units and source.units_detected
    cleaned = scan.clean(source)
    [one] = scan.split_feet(cleaned)

    rotation_, shift = made.pose[:3, :3], made.pose[:3, 3]
    if floor:
        np.testing.assert_allclose(cleaned.support_plane.normal, rotation_[:, 2], atol=2e-3)
        assert abs(cleaned.support_plane.distance_mm(shift[None])[0]) < 0.2
    else:
        assert cleaned.support_plane is None
    # What is left is the foot: within the noise of its surface (no outlier,
    # no floor beside it), and as long as it is.
    generated = made.points * units.to_mm
    distance, _ = cKDTree(generated[made.labels == synthetic.FOOT]).query(one.points_mm)
    assert distance.max() < 2.0
    _, nearest = cKDTree(generated).query(one.points_mm)
    assert (made.labels[nearest] == synthetic.FLOOR).mean() < 0.005
    local = (one.points_mm - shift) @ rotation_
    length = made.truth["foot_length_mm"]
    assert -2.0 < local[:, 0].min() < 0.5 and -0.5 < local[:, 0].max() - length < 2.0


def test_cleaning_keeps_a_sparsely_sampled_foot_whole(synthetic):
    """No outliers in, (almost) none out: a sparse patch of sole is no outlier. The plain
    statistical test cut 2292 of 46k points here, in patches up to 5 mm across."""
    made = synthetic.synth_scan(synthetic.FootShape(foot_length_mm=275.0), n_points=60_000,
                                noise_mm=0.3, pose="random", seed=3)
    cleaned = scan.clean(scan.from_points(made.points))
    kept = len(cleaned.points_mm)
    assert cleaned.dropped["outliers"] <= 0.002 * kept
