"""Parameter sweeps: the product of the varied values, rows equal to direct prescriptions,
the CSV, the plots, and bad --vary refused before anything is read or written."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
from PIL import Image

from orthocad import params, pipeline, scan, synthetic
from orthocad import sweep as sw
from orthocad.cli import main
from orthocad.enums import ArchType, RearfootType
from orthocad.errors import ParameterError
from orthocad.prescribe import parse_overrides, prescribe
from orthocad.synthetic import FootShape

#: A flat, pronated foot: AHI and arch index say low, the heel is everted ≈ 9°.
PRONATED = FootShape(rearfoot_angle_deg=9.0, medial_arch_height_mm=5.0,
                     arch_contact_width_mm=55.0, dorsal_height_mm=54.0)
GAINS, THRESHOLDS = (0.5, 1.0, 1.5), (2.0, 4.0, 6.0)
VARY = [f"rearfoot_post.gain={','.join(map(str, GAINS))}",
        f"classification.pronated_deg={','.join(map(str, THRESHOLDS))}"]


@pytest.fixture(scope="module")
def pronated_ply(tmp_path_factory) -> Path:
    data = synthetic.synth_scan(PRONATED, n_points=60_000, noise_mm=0.3, pose="random", seed=3)
    path = tmp_path_factory.mktemp("sweep") / "pronated.ply"
    scan.write(path, data.points, normals=data.normals)
    return path


@pytest.fixture(scope="module")
def feet(pronated_ply) -> list[sw.SweepFoot]:
    return sw.load_feet([pronated_ply])


@pytest.fixture(scope="module")
def grid() -> sw.Grid:
    return sw.parse_vary(VARY)


@pytest.fixture(scope="module")
def rows(feet, grid) -> list[dict]:
    return sw.run_sweep(feet, grid)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --- the grid ---

def test_parse_vary_keeps_the_order_and_the_values():
    grid = sw.parse_vary(["arch.target_mm=14, 16,18.5", "cavus.first_ray_cutout=true,false"])
    assert grid == {"arch.target_mm": (14.0, 16.0, 18.5),
                    "cavus.first_ray_cutout": (True, False)}
    assert sw.variants(grid) == [
        {"arch.target_mm": a, "cavus.first_ray_cutout": b}
        for a, b in itertools.product((14.0, 16.0, 18.5), (True, False))]


def test_the_pronated_foot_is_what_the_sweep_needs(feet):
    [foot] = feet
    c = foot.measurements.classification
    assert (c.arch, c.rearfoot) == (ArchType.LOW, RearfootType.PRONATED)
    assert foot.measurements.rearfoot_angle_deg == pytest.approx(9.0, abs=1.0)


# --- rows ---

def test_one_row_per_foot_and_variant(rows, grid):
    assert len(rows) == len(GAINS) * len(THRESHOLDS)
    assert [(r["rearfoot_post.gain"], r["classification.pronated_deg"]) for r in rows] == list(
        itertools.product(GAINS, THRESHOLDS))
    assert [r["variant"] for r in rows] == list(range(len(rows)))
    assert {(r["scan"], r["side"], r["foot"]) for r in rows} == {("pronated.ply", "right", 0)}


def test_each_row_is_the_prescription_prescribe_gives_with_those_parameters(feet, rows):
    m = feet[0].measurements
    for row in rows:
        variant = {k: row[k] for k in ("rearfoot_post.gain", "classification.pronated_deg")}
        direct = prescribe(m, params=params.with_overrides(params.defaults(), variant)).to_row()
        # The rearfoot class follows the varied threshold in the sweep (the rules do anyway).
        skip = {"rearfoot", "warnings"}
        assert {k: row[k] for k in direct if k not in skip} == {
            k: v for k, v in direct.items() if k not in skip}


def test_the_medial_post_moves_as_the_rule_says(feet, rows):
    """clamp(gain × (angle − threshold), 0, cap): up with the gain, down with the threshold."""
    angle = feet[0].measurements.rearfoot_angle_deg
    cap = params.defaults().rearfoot_post.cap_deg
    post = {(r["rearfoot_post.gain"], r["classification.pronated_deg"]): r["rearfoot_post_deg"]
            for r in rows}
    for (gain, threshold), value in post.items():
        assert value == pytest.approx(min(max(gain * (angle - threshold), 0.0), cap), abs=0.051)
    for threshold in THRESHOLDS:
        by_gain = [post[gain, threshold] for gain in GAINS]
        assert by_gain == sorted(by_gain) and by_gain[0] < by_gain[-1]
    for gain in GAINS:
        by_threshold = [post[gain, threshold] for threshold in THRESHOLDS]
        assert by_threshold == sorted(by_threshold, reverse=True)
        assert by_threshold[0] > by_threshold[-1]


def test_varied_thresholds_reclassify_the_foot_as_measuring_with_them_would(
        pronated_ply, feet):
    """A low-arch threshold below the foot's AHI turns it normal: no arch raise, no flange."""
    grid = sw.parse_vary(["classification.ahi_low=0.20,0.31"])
    rows = sw.run_sweep(feet, grid)
    for row in rows:
        p = params.with_overrides(params.defaults(), {"classification.ahi_low":
                                                      row["classification.ahi_low"]})
        [m] = pipeline.measure_scan(scan.read(pronated_ply), params=p)
        direct = prescribe(m, params=p).to_row()
        assert {k: row[k] for k in direct} == direct
    assert [r["arch"] for r in rows] == ["normal", "low"]
    assert [r["medial_flange_mm"] for r in rows] == [0.0, 10.0]


def test_clinician_inputs_and_field_overrides_apply_to_every_variant(feet, grid):
    rows = sw.run_sweep(feet, grid, overrides=parse_overrides(["right.medial_skive_mm=2"]),
                        lld_mm=10.0, short_side=feet[0].measurements.side)
    assert {r["medial_skive_mm"] for r in rows} == {2.0}
    assert {r["heel_lift_mm"] for r in rows} == {6.0}


# --- files ---

@pytest.fixture(scope="module")
def written(rows, grid, tmp_path_factory):
    out = tmp_path_factory.mktemp("written")
    (out / "notes.txt").write_text("kept")
    return out, sw.write_sweep(rows, grid, out)


def test_csv_has_the_identifiers_the_varied_values_and_the_prescription(written, rows, feet):
    out, files = written
    with open(files["csv"], newline="") as fh:
        reader = csv.DictReader(fh)
        table = list(reader)
    rx_columns = [c for c in prescribe(feet[0].measurements).to_row() if c != "side"]
    assert reader.fieldnames == ["scan", "side", "foot", "variant", "rearfoot_post.gain",
                                 "classification.pronated_deg", *rx_columns]
    assert len(table) == len(rows)
    for line, row in zip(table, rows, strict=True):
        assert float(line["rearfoot_post_deg"]) == row["rearfoot_post_deg"]
        assert line["device_length"] == row["device_length"]


def test_one_valid_png_per_varied_parameter_and_nothing_else_touched(written, grid):
    out, files = written
    for key in grid:
        with Image.open(files[key]) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            image.verify()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["notes.txt", sw.CSV_NAME, *(sw.plot_name(k) for k in grid)])  # no staging left
    assert (out / "notes.txt").read_text() == "kept"


def test_plots_show_only_the_fields_a_parameter_moved(rows, grid):
    moved = sw.moved_fields(rows, grid, "rearfoot_post.gain")
    assert "rearfoot_post_deg" in moved
    for still in ("arch_support_height_mm", "medial_flange_mm", "shell_thickness_mm",
                  "forefoot_post_deg", "device_length", "arch"):
        assert still not in moved
    # The threshold moves the post and, through the class, the rearfoot column.
    assert {"rearfoot_post_deg"} <= set(sw.moved_fields(rows, grid,
                                                         "classification.pronated_deg"))


def test_a_parameter_that_moves_nothing_still_gets_its_plot(feet, tmp_path):
    grid = sw.parse_vary(["met_pad.behind_mth_mm=3,9"])  # no pad asked for: nothing moves
    rows = sw.run_sweep(feet, grid)
    assert sw.moved_fields(rows, grid, "met_pad.behind_mth_mm") == []
    files = sw.write_sweep(rows, grid, tmp_path)
    with Image.open(files["met_pad.behind_mth_mm"]) as image:
        image.verify()


def test_geometry_records_the_insole_per_distinct_prescription(feet):
    grid = sw.parse_vary(["arch.comfort_cap_mm=0,6", "met_pad.behind_mth_mm=3,9"],
                         geometry=True)
    rows = sw.run_sweep(feet, grid, geometry=True)
    low, high = rows[0], rows[2]  # comfort cap 0 and 6 mm
    assert high["arch_support_height_mm"] > low["arch_support_height_mm"]
    assert high["insole_volume_mm3"] > low["insole_volume_mm3"] > 0
    assert high["insole_max_height_mm"] >= low["insole_max_height_mm"]
    for row in rows:
        assert row["insole_min_thickness_mm"] >= params.defaults().device.shell_thickness_mm - 0.1
        assert row["insole_error"] == ""
    # The pad's position without a pad changes nothing: the same insole (built once).
    assert {k: rows[0][k] for k in sw.GEOMETRY} == {k: rows[1][k] for k in sw.GEOMETRY}


# --- refused ---

@pytest.mark.parametrize(("vary", "fragment"), [
    ("arch.nope=1,2", "unknown parameter 'arch.nope'"),
    ("left.arch.target_mm=14,16", "unknown parameter"),
    ("arch.target_mm=10,99", "arch.target_mm = 99"),
    ("arch.target_mm=a,b", "input should be a valid number"),
    ("arch.target_mm=[1],2", "is not a value"),
    ("arch.target_mm", "is not GROUP.FIELD=v1,v2"),
    ("arch.target_mm=", "is not GROUP.FIELD=v1,v2"),
    ("arch.target_mm=14,14", "lists a value twice"),
    ("classification.pronated_deg=4,10", "need skive.start_deg >= classification.pronated_deg"),
    ("quality.max_noise_mm=0.5,1", "orthocad measure --set"),
    ("insole.margin_mm=0,3", "add --geometry"),
])
def test_bad_vary_is_exit_2_with_one_line_and_no_files(capsys, tmp_path, pronated_ply, vary,
                                                        fragment):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", pronated_ply, "--vary", vary, "--out", out)
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_key_both_set_and_varied_is_refused(capsys, tmp_path, pronated_ply):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", pronated_ply, "--vary", "arch.target_mm=14,16",
                           "--set", "left.arch.target_mm=12", "--out", out)
    assert code == 2 and "both --set and varied" in err
    assert not out.exists()


def test_a_missing_scan_is_exit_2_and_nothing_written(capsys, tmp_path, pronated_ply):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "sweep", pronated_ply, tmp_path / "nowhere.ply",
                           "--vary", "arch.target_mm=14,16", "--out", out)
    assert code == 2 and "nowhere.ply" in err
    assert not out.exists()


def test_the_library_refuses_a_varied_value_outside_its_bounds(feet):
    with pytest.raises(ParameterError, match="rearfoot_post.gain = 3"):
        sw.run_sweep(feet, {"rearfoot_post.gain": (1.0, 3.0)})


# --- the command ---

def test_sweep_command_writes_the_csv_and_plots(capsys, tmp_path, pronated_ply):
    code, out, err = run_cli(capsys, "sweep", pronated_ply, pronated_ply, *sum(
        (["--vary", v] for v in VARY), []), "--out", tmp_path, "--lld-mm", "4",
        "--short-side", "right")
    assert code == 0, err
    assert "18 rows (2 feet × 9 variants)" in out
    assert "rearfoot_post.gain moved" in out and "rearfoot_post_deg" in out
    with open(tmp_path / sw.CSV_NAME, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 18 and {r["heel_lift_mm"] for r in table} == {"2.4"}
    assert {r["foot"] for r in table} == {"0", "1"}  # same file name, told apart
    for key in ("rearfoot_post.gain", "classification.pronated_deg"):
        assert (tmp_path / sw.plot_name(key)).stat().st_size > 0
