"""Sign-off: the record of who approved which files, and the check that they are unchanged."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orthocad import signoff
from orthocad.cli import main
from orthocad.errors import InputError


@pytest.fixture
def case(tmp_path) -> Path:
    """A case folder as `orthocad run` leaves it (contents stand in for the real files)."""
    (tmp_path / "left").mkdir()
    (tmp_path / "report_assets").mkdir()
    files = {"case.json": b"{}", "report.html": b"<html></html>",
             "report_assets/plantar_left.png": b"\x89PNG fake",
             "left/C1_left.stl": b"solid insole", "left/C1_left.step": b"ISO-10303-21;"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_sign_records_name_time_and_every_files_hash(case):
    before = datetime.now(UTC).replace(microsecond=0)
    path = signoff.sign(case, by="  Dr A.  Moreau ", note="pair checked")
    assert path == case / signoff.SIGNOFF_NAME
    record = json.loads(path.read_text("utf-8"))
    assert record["by"] == "Dr A. Moreau" and record["note"] == "pair checked"
    signed_at = datetime.strptime(record["time_utc"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= signed_at <= datetime.now(UTC) + timedelta(seconds=1)
    expected = {p.relative_to(case).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in case.rglob("*") if p.is_file() and p.name != signoff.SIGNOFF_NAME}
    assert record["files"] == expected and len(expected) == 5
    assert list(record["files"]) == sorted(expected)
    assert not [p for p in case.iterdir() if p.name.startswith(".")], "temporary file left"


def test_check_passes_on_untouched_files(case):
    signoff.sign(case, by="Dr A")
    result = signoff.check(case)
    assert result.ok and result.problems() == []
    assert result.signoff.by == "Dr A" and len(result.signoff.files) == 5


def test_check_names_changed_missing_and_added_files(case):
    signoff.sign(case, by="Dr A")
    (case / "left/C1_left.stl").write_bytes(b"solid other")
    (case / "report.html").unlink()
    (case / "left/extra.txt").write_text("x")
    result = signoff.check(case)
    assert not result.ok
    assert result.changed == ("left/C1_left.stl",)
    assert result.missing == ("report.html",)
    assert result.added == ("left/extra.txt",)
    assert result.problems() == ["changed: left/C1_left.stl", "missing: report.html",
                                 "added: left/extra.txt"]


def test_a_byte_changed_in_place_is_caught(case):
    signoff.sign(case, by="Dr A")
    target = case / "report_assets/plantar_left.png"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1  # same size, one bit
    target.write_bytes(bytes(data))
    assert signoff.check(case).changed == ("report_assets/plantar_left.png",)


def test_signing_again_approves_the_current_files(case):
    signoff.sign(case, by="Dr A")
    (case / "case.json").write_text('{"changed": true}')
    assert not signoff.check(case).ok
    signoff.sign(case, by="Dr B")
    result = signoff.check(case)
    assert result.ok and result.signoff.by == "Dr B"


def test_bad_folders_and_records_are_input_errors(case, tmp_path_factory):
    with pytest.raises(InputError, match="is not a folder"):
        signoff.sign(case / "nowhere", by="Dr A")
    with pytest.raises(InputError, match="no signoff.json"):
        signoff.check(case)
    with pytest.raises(InputError, match="--by is empty"):
        signoff.sign(case, by="   ")
    with pytest.raises(InputError, match="holds no files"):
        signoff.sign(tmp_path_factory.mktemp("empty"), by="Dr A")
    (case / signoff.SIGNOFF_NAME).write_text('{"by": "Dr A"}')
    with pytest.raises(InputError, match="not a valid sign-off"):
        signoff.check(case)
    (case / signoff.SIGNOFF_NAME).write_text("not json")
    with pytest.raises(InputError, match="not a valid sign-off"):
        signoff.check(case)


def test_cli_exit_codes(case, capsys):
    assert main(["signoff", str(case), "--by", "Dr A", "--note", "ok"]) == 0
    assert "5 files signed off" in capsys.readouterr().out
    assert main(["signoff", str(case), "--check"]) == 0
    assert "all 5 files as Dr A signed them off" in capsys.readouterr().out
    (case / "left/C1_left.step").write_bytes(b"ISO-10303-21; edited")
    assert main(["signoff", str(case), "--check"]) == 3
    err = capsys.readouterr().err
    assert "changed: left/C1_left.step" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["signoff", str(case / "nowhere"), "--check"]) == 2
    assert main(["signoff", str(case)]) == 2  # neither --by nor --check
    assert main(["signoff", str(case), "--check", "--by", "Dr A"]) == 2
    assert main(["signoff", str(case), "--check", "--note", "x"]) == 2
    capsys.readouterr()
