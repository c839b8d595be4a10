"""Insole files and validation: round trips, byte-stable files, every check failing, slicers."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import shapely
import trimesh

import orthocad
from orthocad import (
    export,
    frame,
    insole,
    measure,
    params,
    pipeline,
    prescribe,
    scan,
    surface,
    synthetic,
)
from orthocad.cli import main
from orthocad.enums import OutputFrame, Side, Units
from orthocad.errors import ExitCode, InputError, RejectedError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BED = "0x0,300x0,300x300,0x300"  # PrusaSlicer's default 200 mm bed is too small for an insole
SHA = "ab" * 32


@cache
def case(side: Side = Side.RIGHT):
    """A synthetic foot (60k points), framed, with its plantar grid and measurements."""
    synth = synthetic.synth_scan(synthetic.FootShape(side=side), n_points=60_000, seed=3)
    cleaned = pipeline.split_and_clean(scan.from_points(synth.points, units=Units.MM))
    foot = frame.canonical(cleaned[0], side=side)
    return foot, surface.plantar(foot), measure.measure(foot)


@cache
def built(side: Side = Side.RIGHT, **overrides):
    """(insole, prescription) for the synthetic foot with prescription overrides."""
    foot, plantar, m = case(side)
    rx = prescribe.prescribe(m, overrides=overrides)
    return insole.build_insole(foot, rx, plantar=plantar, measurements=m), rx


def check(ins, rx=None, *, side=Side.RIGHT, **kwargs) -> export.Validation:
    _, plantar, m = case(side)
    kwargs.setdefault("plantar", plantar)
    kwargs.setdefault("measurements", m)
    return export.validate(ins, prescription=rx, **kwargs)


def by_name(validation: export.Validation) -> dict[str, export.Check]:
    return {c.name: c for c in validation.checks}


CHECKS = ["single_solid", "mesh_watertight", "mesh_volume", "step_reimport",
          "min_thickness_heel", "min_thickness_arch", "min_thickness_forefoot",
          "min_thickness_edge", "inside_outline", "max_height", "sole_gap_above",
          "sole_gap_below"]


# --- writers -------------------------------------------------------------------------------------


def test_stl_is_binary_and_round_trips(tmp_path):
    ins, _ = built()
    path = export.write_insole(ins, tmp_path / "a.stl", case_id="C-1")
    data = path.read_bytes()
    assert data[:80].startswith(b"orthocad ") and b"C-1 right" in data[:80]
    n = int(np.frombuffer(data[80:84], "<u4")[0])
    assert n == len(ins.mesh.faces) and len(data) == 84 + 50 * n
    loaded = trimesh.load(path)
    assert len(loaded.faces) == len(ins.mesh.faces)
    assert len(loaded.vertices) == len(ins.mesh.vertices)
    assert loaded.is_watertight and loaded.is_winding_consistent
    assert loaded.volume == pytest.approx(ins.mesh.volume, rel=1e-5)


def test_3mf_round_trips_with_units_and_metadata(tmp_path):
    ins, _ = built()
    path = export.write_insole(ins, tmp_path / "a.3mf", case_id="C-1", scan_sha256=SHA)
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(ins.mesh.faces)
    assert len(loaded.vertices) == len(ins.mesh.vertices)
    assert loaded.volume == pytest.approx(ins.mesh.volume, rel=1e-5)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in archive.infolist())
        model = archive.read("3D/3dmodel.model").decode()
    assert 'unit="millimeter"' in model
    meta = dict(re.findall(r'<metadata name="([^"]+)">([^<]*)</metadata>', model))
    assert meta["orthocad:version"] == orthocad.__version__
    assert meta["orthocad:case_id"] == "C-1"
    assert meta["orthocad:side"] == "right"
    assert meta["orthocad:params_sha256"] == params.digest(params.defaults())
    assert meta["orthocad:scan_sha256"] == SHA
    assert meta["orthocad:frame"] == "canonical"
    assert meta["orthocad:forced"] == "false"


def test_step_is_ap214_in_mm_and_reimports_as_one_valid_solid_of_the_same_volume(tmp_path):
    from orthocad._native import cadquery

    ins, _ = built()
    path = export.write_insole(ins, tmp_path / "a.step", case_id="C-1")
    text = path.read_text()
    assert "AUTOMOTIVE_DESIGN" in text  # AP214
    assert "SI_UNIT(.MILLI.,.METRE.)" in text
    assert "FILE_NAME('C-1_right','1970-01-01T00:00:00'" in text  # no wall-clock time
    solids = cadquery().importers.importStep(str(path)).val().Solids()
    assert len(solids) == 1 and solids[0].isValid()
    assert export._brep_volume(solids[0].wrapped) == pytest.approx(ins.volume_mm3, rel=1e-5)


def test_step_declares_its_greatest_tolerance_so_a_reader_keeps_the_trimming_curves(tmp_path):
    """Declared as the average (OCCT's default), a reader re-fits the engraved insole's top-face
    trimming curves, 16 poles each, with hundreds: every volume integration then takes 10x."""
    from OCP.BRep import BRep_Tool
    from OCP.BRepAdaptor import BRepAdaptor_Curve2d
    from OCP.GeomAbs import GeomAbs_BSplineCurve

    from orthocad._native import cadquery

    foot, plantar, m = case()
    ins = insole.build_insole(foot, prescribe.prescribe(m), plantar=plantar, measurements=m,
                              case_id="C-1")
    path = export.write_insole(ins, tmp_path / "a.step", case_id="C-1")
    [declared] = re.findall(r"UNCERTAINTY_MEASURE_WITH_UNIT\(LENGTH_MEASURE\(([-+.E\d]+)\)",
                            path.read_text())
    assert float(declared) >= max(BRep_Tool.Tolerance_s(e.wrapped) for e in ins.solid.Edges())

    def curved_trims(solid) -> list[int]:  # planes' trimming curves are the reader's own
        return sorted(BRepAdaptor_Curve2d(e.wrapped, f.wrapped).NbPoles()
                      for f in solid.Faces() if f.geomType() != "PLANE" for e in f.Edges()
                      if BRepAdaptor_Curve2d(e.wrapped, f.wrapped).GetType()
                      == GeomAbs_BSplineCurve)

    [read] = cadquery().importers.importStep(str(path)).val().Solids()
    assert curved_trims(read) == curved_trims(ins.solid)


def test_a_step_written_again_with_other_metadata_is_what_a_fresh_write_gives(tmp_path):
    ins, rx = built()
    export.write_insole(ins, tmp_path / "first.step", case_id="C-1")  # translated, and kept
    again = export.write_insole(ins, tmp_path / "again.step", case_id="C-2")
    foot, plantar, m = case()
    fresh = insole.build_insole(foot, rx, plantar=plantar, measurements=m)
    alone = export.write_insole(fresh, tmp_path / "alone.step", case_id="C-2")
    assert again.read_bytes() == alone.read_bytes()
    assert "FILE_NAME('C-2_right'" in again.read_text() and "C-1" not in again.read_text()


def test_same_inputs_give_byte_identical_files(tmp_path):
    ins, rx = built()
    foot, plantar, m = case()
    again = insole.build_insole(foot, rx, plantar=plantar, measurements=m)  # a fresh build
    for suffix in export.FORMATS:
        one = export.write_insole(ins, tmp_path / f"one{suffix}", case_id="C-1")
        two = export.write_insole(again, tmp_path / f"two{suffix}", case_id="C-1")
        assert one.read_bytes() == two.read_bytes(), suffix
    # ... and the metadata is in the bytes: another case id gives another file
    other = export.write_insole(ins, tmp_path / "other.3mf", case_id="C-2")
    assert other.read_bytes() != (tmp_path / "one.3mf").read_bytes()


def test_unknown_suffix_bad_case_id_and_non_rigid_transform_are_refused(tmp_path):
    ins, _ = built()
    with pytest.raises(InputError, match=r"\.obj.*\.stl, \.step, \.3mf"):
        export.write_insole(ins, tmp_path / "a.obj")
    with pytest.raises(InputError, match="case id"):
        export.write_insole(ins, tmp_path / "a.stl", case_id="Jane Doe")
    with pytest.raises(InputError, match="rotation and translation"):
        export.write_insole(ins, tmp_path / "a.stl", transform=np.diag([1.0, -1.0, 1.0, 1.0]))
    assert list(tmp_path.iterdir()) == []


def test_writes_are_atomic(tmp_path):
    ins, _ = built()
    for suffix in export.FORMATS:
        export.write_insole(ins, tmp_path / f"a{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.3mf", "a.step", "a.stl"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = dataclasses.replace(ins, solid=None, mesh=None)  # fails inside each writer
    for suffix in export.FORMATS:
        with pytest.raises(AttributeError):
            export.write_insole(broken, tmp_path / f"a{suffix}")
    # no temporary file left, and each earlier file untouched
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [Side.RIGHT, Side.LEFT])
def test_a_good_insole_passes_every_check(side):
    ins, rx = built(side)
    v = check(ins, rx, side=side)
    assert [c.name for c in v.checks] == CHECKS
    assert v.passed, v.reasons()
    assert v.failures == () and v.skipped == {}
    c = by_name(v)
    assert c["mesh_volume"].value < 0.1  # percent
    assert c["step_reimport"].value < 1e-3
    for region in ("heel", "arch", "forefoot"):
        assert c[f"min_thickness_{region}"].value >= rx.shell_thickness_mm - 0.01
    assert c["max_height"].value == pytest.approx(ins.mesh.vertices[:, 2].max())
    # the gap map: the top follows the sole + shell where nothing is prescribed (the forefoot)
    gap = v.gap_map
    xs = gap.x0_mm + gap.step_mm * np.arange(gap.z_mm.shape[1])
    forefoot = gap.z_mm[:, (xs > 0.5 * ins.foot_length_mm)]
    assert np.nanmedian(np.abs(forefoot)) < 0.5
    d = v.to_dict()
    assert d["passed"] and not d["forced"] and len(d["checks"]) == len(CHECKS)
    json.dumps(d)


def test_a_three_quarter_device_is_thin_only_in_its_feathered_band():
    ins, rx = built()
    grid = export._DenseGrid.of(ins, rx.shell_thickness_mm)
    assert grid.thickness_mm[~grid.measured].min() < 2.0  # the feathered edge, ~1 mm
    assert grid.thickness_mm[grid.measured].min() >= rx.shell_thickness_mm - 0.01


def test_a_shell_device_holds_its_shell_along_the_normal():
    foot, plantar, m = case()
    shell = params.with_overrides(params.defaults(), {"insole.construction": "shell"})
    rx = prescribe.prescribe(m, overrides={"medial_flange_mm": 8.0})
    ins = insole.build_insole(foot, rx, params=shell, plantar=plantar, measurements=m)
    v = check(ins, rx, params=shell)
    assert v.passed, v.reasons()
    c = by_name(v)
    # the shell is as thick as prescribed along its normal (not its 1/cos larger vertical)
    assert c["min_thickness_arch"].value == pytest.approx(rx.shell_thickness_mm, abs=0.1)
    filled, _ = built(medial_flange_mm=8.0)
    assert by_name(check(filled, rx))["min_thickness_arch"].value > c["min_thickness_arch"].value


def test_an_engraving_is_checked_against_the_shell_less_its_depth():
    foot, plantar, m = case()
    _, rx = built()
    ins = insole.build_insole(foot, rx, plantar=plantar, measurements=m, case_id="C-1")
    v = check(ins, rx)
    assert v.passed, v.reasons()
    engraved = by_name(v)["min_thickness_engraved"]
    depth = ins.engraving.depth_mm
    assert engraved.limit == pytest.approx(rx.shell_thickness_mm - 0.1 - depth)
    # the letters are seen: thinner there than the rest of the heel
    assert engraved.value < by_name(v)["min_thickness_heel"].value - depth / 2


def test_gap_map_is_skipped_without_plantar():
    ins, rx = built()
    v = export.validate(ins, prescription=rx)
    assert "sole_gap" in v.skipped and "sole_gap_above" not in by_name(v)


def failing(name: str):
    """An insole (and how to validate it) that fails check ``name``."""
    from orthocad._native import cadquery

    cq = cadquery()
    ins, rx = built()
    kwargs = {}
    if name == "two_solids":
        ins = dataclasses.replace(ins, solid=cq.Compound.makeCompound(
            [ins.solid, ins.solid.translate(cq.Vector(0, 0, 50))]))
    elif name == "open_shell":
        ins = dataclasses.replace(ins, solid=cq.Shell.makeShell(ins.solid.Faces()[1:]))
    elif name == "mesh_hole":
        mesh = trimesh.Trimesh(ins.mesh.vertices, ins.mesh.faces[1:], process=False)
        ins = dataclasses.replace(ins, mesh=mesh)
    elif name == "mesh_volume":
        mesh = ins.mesh.copy()
        mesh.apply_scale([1.0, 1.0, 1.05])
        ins = dataclasses.replace(ins, mesh=mesh)
    elif name == "thin":  # a 3 mm device for a 7 mm shell
        rx = dataclasses.replace(rx, shell_thickness_mm=7.0)
    elif name == "thin_edge":  # the edge band, heel-cup rim included, is under 25 mm
        rx = dataclasses.replace(rx, shell_thickness_mm=25.0)
    elif name == "outline":
        smaller = shapely.Polygon(ins.outline_mm).buffer(-2.0)
        ins = dataclasses.replace(ins, outline_mm=np.asarray(smaller.exterior.coords))
    elif name == "height":
        kwargs["params"] = params.with_overrides(params.defaults(), {"insole.max_height_mm": 10})
    elif name == "above":  # a posted, lifted device checked against the plain prescription
        ins, _ = built(rearfoot_post_deg=6.0, heel_lift_mm=5.0, lift_extent="heel")
    elif name == "below":  # the sole scanned 5 mm higher than the device follows
        _, plantar, _ = case()
        kwargs["plantar"] = dataclasses.replace(plantar, z_mm=plantar.z_mm + 5.0)
    return ins, rx, kwargs


@pytest.mark.parametrize(("scenario", "fails"), [
    ("two_solids", {"single_solid", "step_reimport"}),
    ("open_shell", {"single_solid", "step_reimport"}),
    ("mesh_hole", {"mesh_watertight"}),
    ("mesh_volume", {"mesh_volume"}),
    ("thin", {"min_thickness_heel", "min_thickness_arch", "min_thickness_forefoot"}),
    ("thin_edge", {"min_thickness_edge"}),
    ("outline", {"inside_outline"}),
    ("height", {"max_height"}),
    ("above", {"sole_gap_above"}),
    ("below", {"sole_gap_below"}),
])
def test_every_check_can_fail_and_says_why(scenario, fails):
    ins, rx, kwargs = failing(scenario)
    v = check(ins, rx, **kwargs)
    failed = {c.name for c in v.failures}
    assert fails <= failed, (scenario, failed)
    assert not v.passed
    for c in v.failures:
        assert c.message and c.name in v.reasons()
    # only what the scenario breaks (and what follows from it) fails
    if scenario in ("mesh_hole", "outline", "height", "above", "below"):
        assert failed == fails, (scenario, v.reasons())


def test_failed_validation_stops_the_export_and_writes_nothing(tmp_path):
    ins, rx, kwargs = failing("height")
    out = tmp_path / "out"
    with pytest.raises(RejectedError, match="max_height") as raised:
        export.export_insole(ins, out, stem="foot_right", prescription=rx, **kwargs)
    assert raised.value.exit_code == ExitCode.REJECTED
    assert not out.exists() or list(out.iterdir()) == []


def test_force_writes_the_files_marked(tmp_path):
    from orthocad._native import cadquery

    ins, rx, kwargs = failing("height")
    done = export.export_insole(ins, tmp_path, stem="foot_right", prescription=rx, force=True,
                                case_id="C-1", **kwargs)
    assert [p.name for p in done.paths] == [
        "foot_right.stl", "foot_right.step", "foot_right.3mf", "foot_right_validation.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in done.paths)
    report = json.loads((tmp_path / "foot_right_validation.json").read_text())
    assert report["forced"] is True and report["passed"] is False
    assert report["failures"] == ["max_height"] and report["case_id"] == "C-1"
    with zipfile.ZipFile(tmp_path / "foot_right.3mf") as archive:
        model = archive.read("3D/3dmodel.model").decode()
    assert '<metadata name="orthocad:forced">true</metadata>' in model
    assert "forced true" in (tmp_path / "foot_right.step").read_text()
    step = cadquery().importers.importStep(str(tmp_path / "foot_right.step")).val()
    assert len(step.Solids()) == 1  # a forced file is still a whole file


def test_a_passing_export_is_not_marked(tmp_path):
    ins, rx = built()
    _, plantar, m = case()
    done = export.export_insole(ins, tmp_path, stem="f", prescription=rx, plantar=plantar,
                                force=True)
    assert done.validation.passed and not done.validation.forced
    assert json.loads((tmp_path / "f_validation.json").read_text())["forced"] is False


# --- previews ------------------------------------------------------------------------------------


def test_previews_show_the_device(tmp_path):
    from matplotlib.image import imread

    ins, _ = built()
    image, (left, right, bottom, top) = export.render(ins, "top")
    pixel = (right - left) / image.shape[1]
    covered = (image[:, :, 3] > 0).sum() * pixel**2
    assert covered == pytest.approx(shapely.Polygon(ins.outline_mm).area, rel=0.02)
    side, (_, _, bottom, _) = export.render(ins, "medial")
    rows = np.flatnonzero((side[:, :, 3] > 0).any(axis=1))
    height = bottom + (rows.max() + 0.5) * pixel
    assert height == pytest.approx(ins.mesh.vertices[:, 2].max(), abs=2 * pixel)
    paths = export.previews(ins, tmp_path, stem="foot_right")
    assert sorted(paths) == ["back", "medial", "top"]
    for path in paths.values():
        assert imread(path).shape[0] > 100


# --- outside checkers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    ins, _ = built()
    folder = tmp_path_factory.mktemp("files")
    return {s: export.write_insole(ins, folder / f"insole{s}", case_id="C-1")
            for s in export.FORMATS}


@pytest.mark.skipif(shutil.which("prusa-slicer") is None, reason="prusa-slicer not installed")
@pytest.mark.parametrize("suffix", [".stl", ".3mf"])
def test_prusa_slicer_slices_the_file(files, suffix, tmp_path):
    gcode = tmp_path / "out.gcode"
    done = subprocess.run(
        ["prusa-slicer", "--export-gcode", str(files[suffix]), "--bed-shape", BED,
         "--output", str(gcode)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = gcode.read_text()
    assert len(text) > 100_000 and "G1 " in text


@pytest.mark.skipif(shutil.which("admesh") is None, reason="admesh not installed")
def test_admesh_finds_nothing_to_fix(files):
    done = subprocess.run(["admesh", str(files[".stl"])], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    found = {key.strip(): int(value) for key, value in
             re.findall(r"^([A-Za-z ]+?)\s*:\s+(\d+)\b", done.stdout, flags=re.M)}
    assert found["Number of parts"] == 1
    for key in ("Degenerate facets", "Edges fixed", "Facets removed", "Facets added",
                "Facets reversed", "Backwards edges", "Normals fixed"):
        assert found[key] == 0, key
    assert "Total disconnected facets        :     0                   0" in done.stdout


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def left_ply(tmp_path_factory) -> Path:
    shape = synthetic.FootShape(side=Side.LEFT)
    foot = synthetic.synth_scan(shape, n_points=60_000, noise_mm=0.3, pose="random", seed=3)
    path = tmp_path_factory.mktemp("scan") / "case7.ply"
    scan.write(path, foot.points, normals=foot.normals)
    return path


@pytest.fixture(scope="module")
def canonical_run(left_ply, tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("canonical")
    return main(["insole", str(left_ply), "--out", str(out)]), out


NAMES = ["case7_left.3mf", "case7_left.step", "case7_left.stl",
         "case7_left_prescription.json", "case7_left_validation.json"]


def test_insole_command_writes_the_files(canonical_run, left_ply):
    code, out = canonical_run
    assert code == ExitCode.OK
    assert sorted(p.name for p in out.iterdir()) == NAMES
    report = json.loads((out / "case7_left_validation.json").read_text())
    sha = scan.read(left_ply).sha256
    # the case id defaults to the scan's hash, never its file name (a patient's, maybe)
    assert report["passed"] and report["case_id"] == f"case-{sha[:12]}"
    assert report["side"] == "left" and report["scan_sha256"] == sha
    rx = json.loads((out / "case7_left_prescription.json").read_text())
    assert rx["side"] == "left" and rx["shell_thickness_mm"] == 3.0


def test_insole_command_exits_3_and_keeps_nothing_when_validation_fails(left_ply, tmp_path,
                                                                      capsys):
    out = tmp_path / "out"
    code = main(["insole", str(left_ply), "--out", str(out), "--set", "insole.max_height_mm=10"])
    err = capsys.readouterr().err
    assert code == ExitCode.REJECTED
    assert "max_height" in err and "--force" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_insole_command_force_keeps_the_files_marked(left_ply, tmp_path, capsys):
    code = main(["insole", str(left_ply), "--out", str(tmp_path), "--force",
                 "--set", "insole.max_height_mm=10"])
    err = capsys.readouterr().err
    assert code == ExitCode.REJECTED and "written anyway, marked" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == NAMES
    report = json.loads((tmp_path / "case7_left_validation.json").read_text())
    assert report["forced"] is True and report["failures"] == ["max_height"]


def test_frame_scan_writes_the_device_in_the_scans_coordinates(canonical_run, left_ply,
                                                               tmp_path):
    _, canonical = canonical_run
    [result] = pipeline.make_insoles(left_ply, tmp_path, output_frame=OutputFrame.SCAN)
    written = trimesh.load(tmp_path / "case7_left.stl", process=False)
    back = np.linalg.inv(pipeline.output_to_scan(result.foot))
    vertices = written.vertices @ back[:3, :3].T + back[:3, 3]
    expected = trimesh.load(canonical / "case7_left.stl", process=False).vertices
    assert np.abs(vertices - expected).max() < 1e-3
    # in the scan's coordinates the device lies under the scanned sole
    lo, hi = written.bounds
    points = scan.read(left_ply).points_mm
    assert np.all(lo > points.min(axis=0) - 20) and np.all(hi < points.max(axis=0) + 20)
    assert not np.allclose(written.vertices, expected, atol=1.0)  # ... which moved it
    report = json.loads((tmp_path / "case7_left_validation.json").read_text())
    assert report["frame"] == "scan"
    assert math.isclose(written.volume, trimesh.load(canonical / "case7_left.stl").volume,
                        rel_tol=1e-5)
