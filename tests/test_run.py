"""Tests of orthocad.run and ``orthocad run``: a case from scans to its folder, all or nothing."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orthocad import scan, synthetic
from orthocad.cli import main
from orthocad.enums import Side
from orthocad.errors import InputError, RejectedError
from orthocad.prescribe import parse_overrides
from orthocad.run import CaseInputs, run_case
from orthocad.synthetic import FootShape

SHAPE = FootShape(foot_length_mm=255.0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """A person's left and right feet as separate scans, and a longer right foot."""
    folder = tmp_path_factory.mktemp("scans")
    out = {}
    for name, shape in (("left", replace(SHAPE, side=Side.LEFT)),
                        ("right", replace(SHAPE, side=Side.RIGHT)),
                        ("long_right", FootShape(foot_length_mm=275.0, side=Side.RIGHT))):
        data = synthetic.synth_scan(shape, n_points=60_000, noise_mm=0.3, pose="random",
                                    seed=len(out) + 1)
        out[name] = scan.write(folder / f"patient_smith_{name}.ply", data.points)
    return out


@pytest.fixture(scope="module")
def pair_case(scans, tmp_path_factory):
    out = tmp_path_factory.mktemp("cases") / "C-0001"
    inputs = CaseInputs(case_id="C-0001", left=scans["left"], right=scans["right"], lld_mm=10.0,
                        short_side=Side.LEFT)
    return run_case(inputs, out), out


def test_a_pair_writes_the_fixed_layout(pair_case):
    result, out = pair_case
    assert sorted(p.name for p in out.iterdir()) == [
        "case.json", "left", "report.html", "report_assets", "right", "summary.png"]
    for side in ("left", "right"):
        assert sorted(p.name for p in (out / side).iterdir()) == sorted(
            f"C-0001_{side}{suffix}" for suffix in (
                ".stl", ".step", ".3mf", "_measurements.json", "_prescription.json",
                "_validation.json"))
    assert [r.foot.side for r in result.feet] == [Side.LEFT, Side.RIGHT]
    assert all(p.exists() for r in result.feet for p in r.paths)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_the_pair_s_files_hold_what_the_case_computed(pair_case):
    result, out = pair_case
    left, right = result.feet
    m = json.loads((out / "left" / "C-0001_left_measurements.json").read_text())
    assert m == json.loads(json.dumps(left.measurements.to_dict()))
    rx = json.loads((out / "left" / "C-0001_left_prescription.json").read_text())
    # 10 mm structural discrepancy, left short: 60 % of it, 6 mm, under the left heel only
    assert (rx["heel_lift_mm"], rx["lift_extent"]) == (6.0, "heel")
    assert json.loads((out / "right" / "C-0001_right_prescription.json").read_text()
                      )["heel_lift_mm"] == 0.0
    v = json.loads((out / "right" / "C-0001_right_validation.json").read_text())
    assert v["passed"] is True and v["case_id"] == "C-0001" and v["side"] == "right"
    assert m["foot_length_mm"] == pytest.approx(255.0, abs=1.5)


def test_case_json_records_inputs_parameters_versions_and_timings(pair_case, scans):
    result, out = pair_case
    case = json.loads((out / "case.json").read_text())
    assert case["case_id"] == "C-0001"
    assert [s["given_as"] for s in case["scans"]] == ["left", "right"]
    assert case["scans"][0]["sha256"] == scan.read(scans["left"]).sha256
    assert case["inputs"]["lld_mm"] == 10.0 and case["inputs"]["short_side"] == "left"
    assert case["packages"]["numpy"] == np.__version__
    assert case["feet"][0]["params"]["device"]["shell_thickness_mm"] == 3.0
    for stage in ("left.read", "left.frame", "measure", "left.build", "right.validate",
                  "write"):  # the report comes after case.json, which it lists
        assert case["timings_s"][stage] > 0.0
    assert case["orthocad_version"]


def test_no_patient_file_name_reaches_the_case_folder(pair_case):
    _, out = pair_case
    for path in out.rglob("*"):
        assert "smith" not in path.name
        if path.is_file():
            assert b"smith" not in path.read_bytes()


def test_a_foot_given_as_the_wrong_side_is_refused_unless_trusted(scans, tmp_path):
    out = tmp_path / "case"
    with pytest.raises(InputError, match="given as the left foot but looks like a right foot"):
        run_case(CaseInputs(case_id="X1", left=scans["right"]), out)
    assert not out.exists() and not list(tmp_path.iterdir())
    result = run_case(CaseInputs(case_id="X1", left=scans["right"], trust_sides=True), out)
    assert [r.foot.side for r in result.feet] == [Side.LEFT]
    assert (out / "left" / "X1_left.stl").exists()


def test_feet_differing_by_more_than_10_mm_get_a_warning(scans, tmp_path):
    result = run_case(CaseInputs(case_id="W1", left=scans["left"], right=scans["long_right"]),
                      tmp_path / "W1")
    [warning] = result.warnings
    assert "differ in length by 2" in warning
    assert warning in json.loads((tmp_path / "W1" / "case.json").read_text())["warnings"]
    assert html.escape(warning) in (tmp_path / "W1" / "report.html").read_text()


def test_a_failed_case_leaves_an_earlier_folder_untouched_and_nothing_new(scans, tmp_path):
    out = tmp_path / "R1"
    run_case(CaseInputs(case_id="R1", right=scans["right"]), out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    strict = parse_overrides(["insole.max_height_mm=12"])  # no device is that low
    with pytest.raises(RejectedError, match="max_height"):
        run_case(CaseInputs(case_id="R1", right=scans["right"], overrides=strict), out)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R1"]
    forced = run_case(CaseInputs(case_id="R1", right=scans["right"], overrides=strict,
                                 force=True), out)
    assert forced.feet[0].validation.forced
    v = json.loads((out / "right" / "R1_right_validation.json").read_text())
    assert v["forced"] is True and "max_height" in v["failures"]


def test_bad_inputs_are_refused(scans, tmp_path):
    with pytest.raises(InputError, match="no scan given"):
        run_case(CaseInputs(case_id="B1"), tmp_path / "B1")
    with pytest.raises(InputError, match="case id"):
        run_case(CaseInputs(case_id="../escape", right=scans["right"]), tmp_path / "B2")
    with pytest.raises(InputError, match="not both"):
        run_case(CaseInputs(case_id="B3", scan=scans["left"], right=scans["right"]),
                 tmp_path / "B3")
    with pytest.raises(InputError, match="two right feet"):
        run_case(CaseInputs(case_id="B4", scan=_two_right_feet(scans, tmp_path / "in")),
                 tmp_path / "B4")
    (tmp_path / "in.ply").unlink()
    assert not list(tmp_path.iterdir())


def _two_right_feet(scans, path: Path) -> Path:
    """One scan holding the right foot twice, side by side on its floor."""
    from orthocad import pipeline

    [foot] = pipeline.load_feet(scans["right"])
    beside = foot.points_mm + [0.0, np.ptp(foot.points_mm[:, 1]) + 60.0, 0.0]
    both = np.vstack([foot.to_scan(foot.points_mm), foot.to_scan(beside)])
    return scan.write(path.with_suffix(".ply"), both)


def test_cli_run_single_scan_quiet_when_piped(scans, tmp_path, capsys):
    out = tmp_path / "case"
    code = main(["run", str(scans["right"]), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == ""  # piped: no progress display
    assert f"report: {out / 'report.html'}" in captured.out
    case = json.loads((out / "case.json").read_text())
    # the default case id is opaque: the scan's hash, never its file name
    digest = hashlib.sha256(scans["right"].read_bytes()).hexdigest()
    assert case["case_id"] == f"case-{digest[:12]}"
    assert (out / "right").is_dir()


def test_cli_run_exit_codes(scans, tmp_path, capsys):
    code = main(["run", "--left", str(scans["right"]), "--out", str(tmp_path / "a")])
    assert code == 2 and "--trust-sides" in capsys.readouterr().err
    code = main(["run", str(scans["right"]), "--out", str(tmp_path / "b"),
                 "--set", "insole.max_height_mm=12"])
    err = capsys.readouterr().err
    assert code == 3 and "max_height" in err and "Traceback" not in err
    code = main(["run", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "c")])
    assert code == 2
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def pair_case_parallel(scans, tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel") / "C-0001"
    inputs = CaseInputs(case_id="C-0001", left=scans["left"], right=scans["right"], lld_mm=10.0,
                        short_side=Side.LEFT)
    return run_case(inputs, out, parallel=True), out


def test_a_parallel_run_writes_the_same_files(pair_case, pair_case_parallel):
    (result, out), (fast, fast_out) = pair_case, pair_case_parallel
    for side in ("left", "right"):
        names = sorted(p.name for p in (out / side).iterdir())
        assert sorted(p.name for p in (fast_out / side).iterdir()) == names
        for name in names:  # models, measurements, prescription and validation, byte for byte
            assert (fast_out / side / name).read_bytes() == (out / side / name).read_bytes(), name
    assert [r.foot.side for r in fast.feet] == [Side.LEFT, Side.RIGHT]
    assert all(p.exists() and p.is_relative_to(fast_out) for r in fast.feet for p in r.paths)
    assert fast.feet[0].insole.volume_mm3 == result.feet[0].insole.volume_mm3
    assert set(fast.timings_s) == set(result.timings_s)
    case = json.loads((fast_out / "case.json").read_text())
    assert case["scans"] == json.loads((out / "case.json").read_text())["scans"]
    assert (fast_out / "report.html").exists()
    assert not [p for p in fast_out.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("scenario", ["framing", "validation"])
def test_a_parallel_run_refuses_what_the_sequential_run_refuses(scans, tmp_path, scenario):
    if scenario == "framing":  # the left scan is a right foot: refused before any design
        inputs = CaseInputs(case_id="E1", left=scans["right"], right=scans["right"])
        expected = InputError
    else:  # designed, written in the workspace, then refused: nothing may remain
        inputs = CaseInputs(case_id="E1", right=scans["right"],
                            overrides=parse_overrides(["insole.max_height_mm=12"]))
        expected = RejectedError
    errors = []
    for parallel in (False, True):
        with pytest.raises(expected) as raised:
            run_case(inputs, tmp_path / "E1", parallel=parallel)
        errors.append(str(raised.value))
    assert errors[0] == errors[1]
    assert not list(tmp_path.iterdir())


def test_a_forked_process_that_dies_is_an_error_not_a_hang():
    import functools
    import os

    from orthocad.run import _Forked

    with _Forked(functools.partial(os._exit, 3)) as child:
        with pytest.raises(RuntimeError, match="exit code 3"):
            child.result()


def test_the_case_folder_has_the_mode_a_new_folder_gets(pair_case):
    import os
    import stat

    _, out = pair_case
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
