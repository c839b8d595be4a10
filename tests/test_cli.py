"""The command line: exit codes, one-line errors, JSON contracts, instant --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orthocad import synthetic
from orthocad.cli import main
from orthocad.enums import Side

SCANS = Path(__file__).resolve().parents[1] / "scans"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_is_instant_and_imports_nothing_heavy():
    probe = (
        "import sys; from orthocad.cli import main; "
        "code = main(['--help']); "
        "heavy = [m for m in ('open3d', 'cadquery', 'trimesh', 'scipy', 'OCP') "
        "if m in sys.modules]; "
        "print(heavy); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip().endswith("[]"), done.stdout
    assert "Exit codes" in done.stdout


def test_version(capsys):
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("orthocad ")


def test_unknown_option_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "info", "--no-such-option")
    assert code == 2
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def synthetic_ply(tmp_path_factory) -> tuple[Path, dict]:
    from orthocad import scan

    shape = synthetic.FootShape(side=Side.LEFT)
    foot = synthetic.synth_scan(shape, n_points=60_000, noise_mm=0.3, pose="random", seed=3)
    path = tmp_path_factory.mktemp("cli") / "left.ply"
    scan.write(path, foot.points, normals=foot.normals)
    return path, foot.truth


def test_info_json_on_synthetic_foot(capsys, synthetic_ply):
    path, truth = synthetic_ply
    code, out, err = run_cli(capsys, "info", str(path), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["side"] == "left"
    assert info["scan_kind"] == "full"
    assert info["units"] == "mm"
    assert info["points"] > 10_000
    assert info["foot_length_mm"] == pytest.approx(truth["foot_length_mm"], abs=3.0)


def test_info_on_real_scans(capsys):
    code, out, err = run_cli(capsys, "info", str(SCANS / "find_template_left.obj"), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["side"], info["scan_kind"], info["units"]) == ("left", "full", "m")
    assert 250 < info["foot_length_mm"] < 275  # the template is 264 mm long

    code, out, err = run_cli(capsys, "info", str(SCANS / "techmed3d_plantar_right.obj"), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["side"], info["scan_kind"], info["units"]) == ("right", "plantar", "mm")
    assert 260 < info["foot_length_mm"] < 285  # 274 mm long


def test_info_table_is_readable(capsys):
    code, out, _ = run_cli(capsys, "info", str(SCANS / "techmed3d_plantar_right.obj"))
    assert code == 0
    assert "foot_length_mm" in out and "right" in out


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.ply", None, "not found"),
        ("scan.docx", b"hello", ".docx"),
        ("empty.ply", b"", "empty"),
        ("nan.xyz", b"nan nan nan\n" * 2000, "finite"),
        ("few.xyz", b"1 2 3\n" * 10, "1,000"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, out, err = run_cli(capsys, "info", str(path))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("orthocad: error:")
    assert needle.lower() in lines[0].lower()


def test_units_override_that_makes_no_foot_is_exit_2(capsys):
    code, _, err = run_cli(
        capsys, "info", str(SCANS / "techmed3d_plantar_right.obj"), "--units", "m"
    )
    assert code == 2
    assert "--units" in err and "Traceback" not in err


def test_synth_writes_scans_with_truth(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "synth", "--out", str(tmp_path), "--n", "2", "--seed", "4")
    assert code == 0
    written = [Path(line) for line in out.split()]
    assert all(p.exists() for p in written)
    truths = sorted(tmp_path.glob("*.json"))
    assert len(truths) == 2
    truth = json.loads(truths[0].read_text())["truth"]
    assert 200 < truth["foot_length_mm"] < 320
    # same seed, same feet
    again = tmp_path / "again"
    run_cli(capsys, "synth", "--out", str(again), "--n", "2", "--seed", "4")
    assert (again / truths[0].name).read_text() == truths[0].read_text()


def test_debug_shows_traceback_for_user_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--debug", "info", str(tmp_path / "nope.ply"))
    assert code == 2
    assert "Traceback" in err


def test_internal_error_is_exit_1(capsys, monkeypatch, tmp_path):
    # A bug deep inside the library must surface as exit 1 with a pointer to --debug.
    import orthocad.pipeline

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(orthocad.pipeline, "load_feet", broken)
    code, _, err = run_cli(capsys, "info", str(tmp_path / "x.ply"))
    assert code == 1
    assert "internal error" in err and "--debug" in err


def test_info_splits_a_two_foot_scan(capsys, tmp_path):
    from orthocad import scan

    right = synthetic.synth_scan(synthetic.FootShape(side=Side.RIGHT), n_points=40_000, seed=1)
    left = synthetic.synth_scan(synthetic.FootShape(side=Side.LEFT), n_points=40_000, seed=2)
    # the left foot stands beside the right one, 60 mm of floor between them
    shift = right.points[:, 1].min() - left.points[:, 1].max() - 60.0
    both = np.vstack([right.points, left.points + [0.0, shift, 0.0]])
    path = scan.write(tmp_path / "pair.ply", both)
    code, out, err = run_cli(capsys, "info", str(path), "--json")
    assert code == 0, err
    feet = json.loads(out)["feet"]
    assert sorted(foot["side"] for foot in feet) == ["left", "right"]
    for foot in feet:
        assert foot["foot_length_mm"] == pytest.approx(right.truth["foot_length_mm"], abs=1.5)
    # one --side cannot name two feet
    code, _, err = run_cli(capsys, "info", str(path), "--side", "left")
    assert code == 2 and "two feet" in err
