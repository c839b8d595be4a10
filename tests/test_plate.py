"""Build plates: parts never closer than the gap, inside the bed, pairs together, none dropped."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.affinity
import trimesh

from orthocad import frame, insole, measure, pipeline, plate, prescribe, scan, surface, synthetic
from orthocad.cli import main
from orthocad.enums import Side, Units
from orthocad.errors import InputError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BED = (380.0, 284.0)
GAP = 4.0
SCALES = np.linspace(0.85, 1.12, 10)  # a day of cases, shoe sizes ≈ EU 36 to 46


@cache
def right_insole() -> tuple[np.ndarray, trimesh.Trimesh]:
    """A real three-quarter insole (footprint outline, mesh) of a synthetic right foot."""
    synth = synthetic.synth_scan(synthetic.FootShape(side=Side.RIGHT), n_points=60_000, seed=3)
    cleaned = pipeline.split_and_clean(scan.from_points(synth.points, units=Units.MM))
    foot = frame.canonical(cleaned[0], side=Side.RIGHT)
    plantar, m = surface.plantar(foot), measure.measure(foot)
    built = insole.build_insole(foot, prescribe.prescribe(m), plantar=plantar, measurements=m)
    return plate.footprint(built.mesh), built.mesh


def insole_mesh(side: Side, scale: float = 1.0) -> trimesh.Trimesh:
    """The right insole scaled in the plane; the left is its mirror image."""
    mesh = right_insole()[1].copy()
    mirror = -1.0 if side is Side.LEFT else 1.0
    mesh.apply_transform(np.diag([scale, scale * mirror, 1.0, 1.0]))  # trimesh keeps it outward
    return mesh


@cache
def insole_outline() -> np.ndarray:
    """A three-quarter insole's outline (177 × 100 mm: heel cup, arch, wide forefoot, cut end).

    Analytic, so the packing tests do not move when the insole geometry does.
    """
    heel = shapely.Point(32, 0).buffer(32)
    forefoot = shapely.affinity.scale(shapely.Point(128, 4).buffer(1), 58, 50)
    arch = shapely.affinity.scale(shapely.Point(80, 58).buffer(1), 42, 16)
    shape = shapely.union_all([heel, forefoot]).convex_hull.difference(arch)
    shape = shape.intersection(shapely.box(-1, -100, 177, 100))
    shape = shape.buffer(-8, quad_segs=4).buffer(8, quad_segs=4)
    return np.asarray(shape.exterior.coords)[:-1]


def insole_part(case_id: str, side: Side, scale: float = 1.0) -> plate.Part:
    outline = insole_outline() * scale
    if side is Side.LEFT:
        outline = outline[::-1] * [1.0, -1.0]
    return plate.Part(case_id, side, outline)


def twenty_parts() -> list[plate.Part]:
    return [insole_part(f"case{k:02d}", side, s)
            for k, s in enumerate(SCALES) for side in (Side.LEFT, Side.RIGHT)]


@pytest.fixture(scope="module")
def packing() -> plate.Packing:
    return plate.pack(twenty_parts(), bed_mm=BED, gap_mm=GAP)


def assert_valid(packing: plate.Packing) -> None:
    """No two parts closer than the gap; every part inside the bed less the edge margin."""
    edge = packing.edge_mm
    for p in packing.plates:
        shapes = [shapely.Polygon(placement.outline_mm) for placement in p.placements]
        for i, a in enumerate(shapes):
            x0, y0, x1, y1 = a.bounds
            assert x0 >= edge - 1e-3 and y0 >= edge - 1e-3, (p.number, a.bounds)
            assert x1 <= packing.bed_mm[0] - edge + 1e-3, (p.number, a.bounds)
            assert y1 <= packing.bed_mm[1] - edge + 1e-3, (p.number, a.bounds)
            for b in shapes[:i]:
                assert a.distance(b) >= packing.gap_mm - 0.01


# --- footprint -----------------------------------------------------------------------------------


def test_footprint_of_a_box_is_its_rectangle():
    box = trimesh.creation.box([120.0, 40.0, 8.0])
    outline = plate.footprint(box)
    polygon = shapely.Polygon(outline)
    # 0.05 to 0.15 mm outside the part (grown 0.1 mm, simplified by 0.05 mm)
    assert 120.1 * 40.1 <= polygon.area <= 120.3 * 40.3
    assert polygon.bounds == pytest.approx((-60.1, -20.1, 60.1, 20.1), abs=0.05)
    assert polygon.contains(shapely.box(-60.05, -20.05, 60.05, 20.05))
    assert polygon.exterior.is_ccw


def test_footprint_of_an_open_mesh_uses_every_triangle():
    """A mesh with holes: the downward faces alone may not cover its shadow."""
    box = trimesh.creation.box([50.0, 30.0, 10.0])
    box.update_faces(box.face_normals[:, 2] >= 0)  # no bottom
    assert not box.is_watertight
    assert 50.1 * 30.1 <= shapely.Polygon(plate.footprint(box)).area <= 50.3 * 30.3


def test_footprint_of_an_insole_covers_it_and_follows_its_outline():
    outline, mesh = right_insole()
    polygon = shapely.Polygon(outline)
    assert polygon.is_valid and len(outline) < 400
    assert shapely.contains_xy(polygon.buffer(1e-6), mesh.vertices[:, 0], mesh.vertices[:, 1]).all()
    shadow = shapely.union_all(shapely.polygons(mesh.triangles[:, :, :2]))
    assert polygon.buffer(1e-6).contains(shadow)
    assert shadow.buffer(0.15 + 1e-6).contains(polygon)
    assert polygon.area == pytest.approx(shadow.area, rel=0.01)


# --- packing -------------------------------------------------------------------------------------


def test_twenty_parts_never_overlap_and_stay_on_the_bed(packing):
    assert_valid(packing)
    assert not packing.unplaced and not packing.split
    placed = [p.part.name for plate_ in packing.plates for p in plate_.placements]
    assert sorted(placed) == sorted(part.name for part in twenty_parts())


def test_placements_are_rigid_transforms_of_the_outlines(packing):
    for p in (q for plate_ in packing.plates for q in plate_.placements):
        moved = p.part.outline_mm @ p.matrix[:2, :2].T + p.matrix[:2, 3]
        assert np.allclose(moved, p.outline_mm, atol=1e-9)
        assert np.allclose(p.matrix[:2, :2] @ p.matrix[:2, :2].T, np.eye(2))
        assert np.linalg.det(p.matrix[:2, :2]) == pytest.approx(1.0)  # turned, never mirrored
        assert shapely.Polygon(p.outline_mm).area == pytest.approx(p.part.area_mm2)


def test_left_and_right_share_a_plate(packing):
    plate_of = {p.part.name: plate_.number for plate_ in packing.plates for p in plate_.placements}
    for k in range(len(SCALES)):
        assert plate_of[f"case{k:02d}_left"] == plate_of[f"case{k:02d}_right"]


def test_twenty_parts_need_at_most_one_plate_over_the_area_bound(packing):
    total = sum(part.area_mm2 for part in twenty_parts())
    bound = math.ceil(total / (BED[0] * BED[1]))
    assert packing.area_bound == bound >= 2
    assert bound <= len(packing.plates) <= bound + 1


def test_packing_is_deterministic(packing):
    again = plate.pack(list(reversed(twenty_parts())), bed_mm=BED, gap_mm=GAP)
    first = [(p.part.name, p.angle_deg, p.offset_mm) for q in packing.plates for p in q.placements]
    second = [(p.part.name, p.angle_deg, p.offset_mm) for q in again.plates for p in q.placements]
    assert first == second


def test_an_oversize_part_is_reported_and_its_pair_split():
    parts = [insole_part("big", Side.LEFT, 2.2), insole_part("big", Side.RIGHT, 1.0),
             insole_part("ok", Side.LEFT), insole_part("ok", Side.RIGHT)]
    packing = plate.pack(parts, bed_mm=BED, gap_mm=GAP)
    (miss,) = packing.unplaced
    assert miss.part.name == "big_left"
    assert re.fullmatch(r"\d+×\d+ mm at its narrowest does not fit the 372×276 mm usable bed "
                        r"\(380×284 mm less 4 mm edges\) at any rotation", miss.reason)
    assert packing.split == (("big", "the left insole fits no bed"),)
    placed = sorted(p.part.name for q in packing.plates for p in q.placements)
    assert placed == ["big_right", "ok_left", "ok_right"]
    assert_valid(packing)


def test_a_pair_too_big_for_one_bed_is_split_with_the_reason():
    length = np.ptp(insole_part("x", Side.RIGHT).outline_mm, axis=0).max()
    bed = (length + 20.0, 130.0)  # room for one insole, never two
    parts = [insole_part("wide", side, 1.0) for side in (Side.LEFT, Side.RIGHT)]
    packing = plate.pack(parts, bed_mm=bed, gap_mm=GAP, edge_mm=2.0)
    assert packing.split == (("wide", "left and right do not fit one bed together"),)
    assert [len(p.placements) for p in packing.plates] == [1, 1]
    assert not packing.unplaced
    assert_valid(packing)


def test_a_part_that_fits_only_diagonally_is_placed():
    """262 × 12 mm fits the 194 mm square (a 200 mm bed less 3 mm edges) only at 45°."""
    rod = np.array([[0.0, 0.0], [262.0, 0.0], [262.0, 12.0], [0.0, 12.0]])
    packing = plate.pack([plate.Part("rod", Side.RIGHT, rod)], bed_mm=(200.0, 200.0), gap_mm=3.0)
    (only,) = packing.plates[0].placements
    assert only.angle_deg % 90.0 == pytest.approx(45.0)
    assert_valid(packing)


def test_bad_inputs_refused():
    part = insole_part("a", Side.LEFT)
    with pytest.raises(InputError, match="more than once"):
        plate.pack([part, part], bed_mm=BED, gap_mm=GAP)
    with pytest.raises(InputError, match="no room"):
        plate.pack([part], bed_mm=(100.0, 6.0), gap_mm=GAP)
    with pytest.raises(InputError, match="no room"):
        plate.pack([part], bed_mm=BED, gap_mm=-1.0)


@pytest.mark.parametrize(("text", "bed"), [("380x284", (380.0, 284.0)), (" 250 X 210.5 ",
                                           (250.0, 210.5)), ("300×300", (300.0, 300.0))])
def test_parse_bed(text, bed):
    assert plate.parse_bed(text) == bed


@pytest.mark.parametrize("text", ["380", "380x", "x284", "0x284", "-380x284", "380x284x10",
                                  "abc", "", "1e3x200", "99999x200"])
def test_parse_bed_refuses(text):
    with pytest.raises(InputError, match="WIDTHxDEPTH"):
        plate.parse_bed(text)


# --- files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory):
    """Two cases on a 300×300 bed: their meshes, the packing and its first plate's 3MF."""
    parts, meshes = [], {}
    for case_id, scale in (("A1", 1.0), ("B-2", 0.9)):
        for side in (Side.LEFT, Side.RIGHT):
            mesh = insole_mesh(side, scale)
            parts.append(plate.Part(case_id, side, plate.footprint(mesh)))
            meshes[parts[-1].name] = mesh
    packing = plate.pack(parts, bed_mm=(300.0, 300.0), gap_mm=GAP)
    path = tmp_path_factory.mktemp("plate") / "plate_01.3mf"
    plate.write_plate_3mf(packing.plates[0], meshes, path)
    return meshes, packing, path


def test_3mf_reloads_with_named_placed_objects(small_plate, tmp_path):
    meshes, packing, path = small_plate
    first = packing.plates[0]
    scene = trimesh.load(path)
    names = [p.part.name for p in first.placements]
    assert sorted(scene.geometry) == sorted(names) and len(names) >= 2
    for placement in first.placements:
        mesh = scene.geometry[placement.part.name]
        assert len(mesh.faces) == len(meshes[placement.part.name].faces)
        assert mesh.is_watertight
        assert mesh.bounds[0][2] == pytest.approx(0.0, abs=1e-4)
        # the footprint was grown 0.1 mm, so the placed mesh sits just inside the placed outline
        expected = shapely.Polygon(placement.outline_mm).bounds
        assert np.allclose(mesh.bounds[:, :2].ravel()[[0, 1, 2, 3]],
                           [expected[0], expected[1], expected[2], expected[3]], atol=0.15)
    again = tmp_path / "again.3mf"
    plate.write_plate_3mf(first, meshes, again)
    assert again.read_bytes() == path.read_bytes()  # byte-stable


@pytest.mark.skipif(shutil.which("prusa-slicer") is None, reason="prusa-slicer not installed")
def test_prusa_slicer_slices_the_plate_where_it_was_placed(small_plate, tmp_path):
    _, packing, path = small_plate
    gcode = tmp_path / "plate.gcode"
    done = subprocess.run(
        ["prusa-slicer", "--export-gcode", str(path), "--bed-shape", "0x0,300x0,300x300,0x300",
         "--dont-arrange", "--gcode-label-objects", "--output", str(gcode)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # every extrusion of an object lies on that object's placed footprint
    moves: dict[str, list[tuple[float, float]]] = {}
    current = None
    for line in gcode.read_text().splitlines():
        if line.startswith("; printing object "):
            current = line.split()[3]
        elif line.startswith("; stop printing object"):
            current = None
        elif current and line.startswith("G1 ") and " E" in line:
            found = re.search(r"X(-?[\d.]+) Y(-?[\d.]+)", line)
            if found:
                moves.setdefault(current, []).append((float(found[1]), float(found[2])))
    placements = {p.part.name: p for p in packing.plates[0].placements}
    assert sorted(moves) == sorted(placements)
    for name, xy in moves.items():
        xy = np.array(xy)
        footprint = shapely.Polygon(placements[name].outline_mm).buffer(0.05)
        assert len(xy) > 1000 and shapely.contains_xy(footprint, xy[:, 0], xy[:, 1]).all(), name


def test_plate_csv_lists_every_part(tmp_path):
    parts = [insole_part("big", Side.LEFT, 2.2), insole_part("big", Side.RIGHT),
             insole_part("c", Side.LEFT)]
    packing = plate.pack(parts, bed_mm=BED, gap_mm=GAP)
    path = plate.write_plate_csv(packing, tmp_path / "plates.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(plate.PLATE_CSV_COLUMNS)
    rows = {line.split(",")[1]: line.split(",") for line in lines[1:]}
    assert set(rows) == {"big_left", "big_right", "c_left"}
    assert rows["big_left"][0] == "" and rows["big_left"][-1].startswith("unplaced: ")
    assert rows["big_right"][0] == "01" and rows["big_right"][-1] == "the left insole fits no bed"
    placement = packing.plates[0].placements[0]
    row = rows[placement.part.name]
    assert float(row[4]) == pytest.approx(placement.angle_deg, abs=0.01)
    assert float(row[5]) == pytest.approx(placement.offset_mm[0], abs=1e-3)


# --- the command ---------------------------------------------------------------------------------


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def insole_folder(tmp_path) -> Path:
    """Both layouts: per-case folders and a flat folder of STLs."""
    folder = tmp_path / "done"
    for case_id, scale in (("P1", 1.0), ("P2", 0.92)):
        for side in (Side.LEFT, Side.RIGHT):
            path = folder / case_id / side.value / f"{case_id}_{side.value}.stl"
            path.parent.mkdir(parents=True, exist_ok=True)
            insole_mesh(side, scale).export(path)
    (folder / "loose").mkdir()
    insole_mesh(Side.RIGHT, 0.88).export(folder / "loose" / "Q3_RIGHT.STL")
    (folder / "loose" / "notes_left.txt").write_text("not an insole")
    return folder


def test_cli_plate_writes_plates_and_csv(insole_folder, tmp_path, capsys):
    out = tmp_path / "plates"
    code, stdout, err = run_cli(capsys, "plate", str(insole_folder), "--bed", "300x300",
                                "--out", str(out))
    assert code == 0, err
    plates = sorted(out.glob("plate_*.3mf"))
    assert plates and (out / "plates.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([*(p.name for p in plates),
                                                             "plates.csv"])
    names = sorted(name for p in plates for name in trimesh.load(p).geometry)
    assert names == ["P1_left", "P1_right", "P2_left", "P2_right", "Q3_right"]
    assert f"5 parts on {len(plates)} plates" in stdout
    # a rerun onto fewer plates leaves no stale plate behind
    (out / "plate_09.3mf").write_bytes(b"old")
    code, _, _ = run_cli(capsys, "plate", str(insole_folder), "--bed", "380x284", "--out",
                         str(out))
    assert code == 0 and not (out / "plate_09.3mf").exists()


def test_cli_plate_bad_bed_exits_2_and_writes_nothing(insole_folder, tmp_path, capsys):
    out = tmp_path / "plates"
    code, _, err = run_cli(capsys, "plate", str(insole_folder), "--bed", "300by300", "--out",
                           str(out))
    assert code == 2 and "WIDTHxDEPTH" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_plate_unplaced_part_exits_3(insole_folder, tmp_path, capsys):
    insole_mesh(Side.LEFT, 2.5).export(insole_folder / "G9_left.stl")
    code, stdout, err = run_cli(capsys, "plate", str(insole_folder), "--bed", "300x300",
                                "--out", str(tmp_path / "plates"))
    assert code == 3
    assert "orthocad: G9_left not placed: " in err and "does not fit" in err
    assert "5 parts on" in stdout


def test_cli_plate_refuses_empty_folder_and_duplicates(insole_folder, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "plate", str(tmp_path / "empty"), "--bed", "300x300")
    assert code == 2 and "no insoles found" in err
    shutil.copy(insole_folder / "P1" / "left" / "P1_left.stl", insole_folder / "P1_left.stl")
    code, _, err = run_cli(capsys, "plate", str(insole_folder), "--bed", "300x300", "--out",
                           str(tmp_path / "p"))
    assert code == 2 and "are both P1's left insole" in err


def star(rng: np.random.Generator, size: float) -> np.ndarray:
    """A random star-shaped outline, concave in places."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, 14))
    radii = size * rng.uniform(0.35, 1.0, 14)
    return np.c_[radii * np.cos(angles) * 1.8, radii * np.sin(angles)]


@pytest.mark.parametrize(("seed", "gap", "edge"), [(1, 0.0, 0.0), (2, 2.5, None), (3, 7.3, 1.0)])
def test_random_shapes_keep_every_gap_and_edge(seed, gap, edge):
    rng = np.random.default_rng(seed)
    parts = [plate.Part(f"s{k // 2}", Side.LEFT if k % 2 else Side.RIGHT,
                        star(rng, rng.uniform(15, 60))) for k in range(15)]  # 7 pairs, 1 single
    packing = plate.pack(parts, bed_mm=(260.0, 190.0), gap_mm=gap, edge_mm=edge)
    assert not packing.unplaced
    assert sum(len(p.placements) for p in packing.plates) == len(parts)
    assert_valid(packing)


def test_raster_marks_exactly_the_cells_whose_centre_is_inside():
    rng = np.random.default_rng(4)
    for _ in range(20):
        shape = shapely.Polygon(star(rng, 40)).buffer(rng.uniform(0.5, 3.0))
        shape = shape.difference(shapely.Point(0, 0).buffer(rng.uniform(0, 8)))  # maybe a hole
        x0, y0 = rng.uniform(-90, -70, 2)
        cells = plate._raster(shape, x0, y0, 90, 100)
        ys, xs = np.mgrid[0:90, 0:100]
        centres = (x0 + (xs + 0.5) * plate.CELL_MM, y0 + (ys + 0.5) * plate.CELL_MM)
        assert np.array_equal(cells, shapely.contains_xy(shape, *centres))
