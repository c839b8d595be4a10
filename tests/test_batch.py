"""The batch manifest: parsed exactly, refused whole with every problem's line, safe folders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orthocad import batch
from orthocad.batch import ManifestError, case_dir, case_hash, read_manifest
from orthocad.enums import Side
from orthocad.errors import InputError, ScanReadError

HEADER = "case_id,left_scan,right_scan,lld_mm,short_side,params,overrides,notes\n"


def write(folder: Path, text: str, name: str = "manifest.csv", *, newline: str = "\n") -> Path:
    path = folder / name
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def problems(path: Path) -> dict[int, str]:
    """The refused manifest's problems by line (one line may hold several, joined)."""
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    by_line: dict[int, str] = {}
    for line, text in caught.value.problems:
        by_line[line] = f"{by_line[line]} | {text}" if line in by_line else text
    return by_line


def test_good_manifest_parsed_with_paths_resolved_and_empty_cells_none(tmp_path):
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", HEADER
                 + "A1,scans/a_l.ply,scans/a_r.ply,8,left,p.toml,"
                   '"arch.target_mm=16; right.rearfoot_post_deg=3",first visit\n'
                 + "b-2.x,../b.ply,,,,,,\n"
                 + "c_3,,c.stl\n")  # trailing cells left out
    manifest = read_manifest(path)
    a, b, c = manifest.cases
    folder = (tmp_path / "sub").resolve()
    assert a.case_id == "A1" and a.line == 2
    assert a.left_scan == folder / "scans/a_l.ply" and a.right_scan == folder / "scans/a_r.ply"
    assert a.lld_mm == 8.0 and a.short_side is Side.LEFT
    assert a.params == folder / "p.toml" and a.notes == "first visit"
    assert a.overrides.params == {None: {"arch.target_mm": 16}}
    assert a.overrides.fields == {Side.RIGHT: {"rearfoot_post_deg": 3.0}}
    assert b.left_scan == tmp_path.resolve() / "b.ply" and b.right_scan is None
    assert (b.lld_mm, b.short_side, b.params, b.notes) == (0.0, None, None, "")
    assert b.overrides.params == {} and b.overrides.fields == {}
    assert c.left_scan is None and c.right_scan == folder / "c.stl" and c.line == 4
    assert c.scans == {Side.RIGHT: folder / "c.stl"}


def test_missing_scan_files_are_not_structural(tmp_path):
    path = write(tmp_path, HEADER + "x,nowhere/left.ply,also/missing.ply\n")
    (case,) = read_manifest(path).cases
    assert not case.left_scan.exists() and case.left_scan.name == "left.ply"


def test_bom_crlf_whitespace_blank_lines_and_column_order_tolerated(tmp_path):
    text = ("\ufeff Right_Scan , case_id ,LEFT_SCAN, lld_mm ,short_side\n"
            "\n"
            "  r.ply ,  c1  , l.ply ,  4.5 , Right \n"
            " , , , , \n"
            '"multi\nline.ply",c2,,,\n'
            "r3.ply,c3,,,\n")
    path = write(tmp_path, text, newline="\r\n")
    c1, c2, c3 = read_manifest(path).cases
    assert c1.case_id == "c1" and c1.right_scan.name == "r.ply" and c1.left_scan.name == "l.ply"
    assert c1.lld_mm == 4.5 and c1.short_side is Side.RIGHT and c1.line == 3
    assert c2.right_scan.name == "multi\nline.ply" and c2.line == 5
    assert c3.line == 7  # the quoted cell spans lines 5 and 6


@pytest.mark.parametrize(("row", "expected"), [
    ("a,l.ply,r.ply,-1,left", "lld_mm '-1' is outside 0..100 mm"),
    ("a,l.ply,r.ply,nan,left", "lld_mm 'nan' is outside"),
    ("a,l.ply,r.ply,inf,left", "lld_mm 'inf' is outside"),
    ("a,l.ply,r.ply,8mm,left", "lld_mm '8mm' is not a number"),
    ("a,l.ply,r.ply,101,left", "outside 0..100 mm"),
    ("a,l.ply,r.ply,5,", "lld_mm = 5 needs short_side"),
    ("a,l.ply,r.ply,5,both", "short_side 'both' is not left or right"),
    ("a,l.ply,r.ply,0,auto", "short_side 'auto' is not left or right"),
    ("a,,,,", "no scan"),
    ("a,l.ply,,,,,arch.target_mm", "'arch.target_mm' is not key=value"),
    ("a,l.ply,,,,,no.such_key=1", "unknown key 'no.such_key'"),
    ("a,l.ply,,,,,arch.target_mm=999", "arch.target_mm"),
    ("a,l.ply,,,,,device_length=huge", "device_length"),
    ("a,l.ply,r.ply,,,,,,extra", "9 cells but the header has 8 columns"),
    ('a,"l.ply"x,r.ply', "not valid CSV"),
])
def test_each_structural_problem_reported_with_its_line(tmp_path, row, expected):
    path = write(tmp_path, HEADER + "ok,l.ply,r.ply\n\n" + row + "\n")
    found = problems(path)
    assert list(found) == [4], found
    assert expected in found[4]


def test_unknown_key_message_stays_short(tmp_path):
    found = problems(write(tmp_path, HEADER + "a,l.ply,,,,,no.such_key=1\n"))
    assert "orthocad params --dump" in found[2] and len(found[2]) < 300


@pytest.mark.parametrize(("header", "expected"), [
    ("case_id,left_scan,right_scan,colour", "unknown column 'colour'"),
    ("case_id,left_scan,notes", "missing required column right_scan"),
    ("left_scan,right_scan", "missing required column case_id"),
    ("case_id,left_scan,right_scan,notes,Notes", "notes given twice"),
])
def test_header_problems(tmp_path, header, expected):
    found = problems(write(tmp_path, header + "\nx,l.ply,r.ply\n"))
    assert expected in found[1]


def test_missing_column_reports_the_header_only(tmp_path):
    found = problems(write(tmp_path, "left_scan,right_scan\nl.ply,r.ply\n,\n"))
    assert list(found) == [1]


def test_unnamed_empty_columns_tolerated_but_not_their_cells(tmp_path):
    path = write(tmp_path, "case_id,left_scan,right_scan,,\na,l.ply,,,\nb,l.ply,,,oops\n")
    assert problems(path) == {3: "a cell under a column without a name; name the column or "
                                 "move the cell"}
    assert len(read_manifest(write(tmp_path, "case_id,left_scan,right_scan,\na,l.ply,,\n",
                                   "ok.csv")).cases) == 1


def test_duplicate_ids_ignoring_case(tmp_path):
    path = write(tmp_path, HEADER + "Case1,l.ply,\ncase2,l.ply,\nCASE1,,r.ply\n")
    found = problems(path)
    assert list(found) == [4] and "repeats the id on line 2" in found[4]


def test_several_problems_reported_together_in_line_order(tmp_path):
    path = write(tmp_path, HEADER
                 + "good,l.ply,r.ply\n"
                 + "../evil,l.ply,r.ply\n"
                 + "bad_lld,l.ply,r.ply,-3,left\n"
                 + "good,l.ply,\n"
                 + "noscan,,\n"
                 + "bad_set,l.ply,,,,,nope\n")
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    lines = [line for line, _ in caught.value.problems]
    assert lines == [3, 4, 5, 6, 7]
    message = str(caught.value)
    assert "5 problems" in message and "nothing was processed" in message
    for line in lines:
        assert f"\n  line {line}: " in message
    assert isinstance(caught.value, InputError)


UNSAFE_IDS = ["../x", "..", ".", "/etc/passwd", "a/b", "a\\b", "C:x", "", "x\ty", "x\x00y",
              "x\x1by", "new\nline", "é", "a b", "-rf", ".hidden", "*", "x" * 41, "CON", "nul.txt",
              "com1", "LPT9.csv", "~user", "$HOME"]


@pytest.mark.parametrize("case_id", UNSAFE_IDS)
def test_unsafe_ids_refused_in_the_manifest_and_by_case_dir(tmp_path, case_id):
    assert batch.check_case_id(case_id)
    with pytest.raises(InputError):
        case_dir(tmp_path, case_id)
    quoted = '"' + case_id.replace('"', '""') + '"'
    path = write(tmp_path, HEADER + f"{quoted},l.ply,r.ply\n")
    found = problems(path)
    if case_id.strip():
        assert list(found) == [2] and "case_id" in found[2]
    else:  # the row is blank but for its scans: an empty id
        assert "case_id is empty" in found[2]


@pytest.mark.parametrize("case_id", ["a", "A-1", "2024.05.01_patient-7", "x" * 40, "CONSOLE",
                                     "con_1", "9"])
def test_safe_ids_accepted(tmp_path, case_id):
    from orthocad import export

    assert batch.check_case_id(case_id) is None
    assert case_dir(tmp_path, case_id) == tmp_path.resolve() / case_id
    assert export.check_case_id(case_id) == case_id  # the insole files take it too


def test_case_dir_never_escapes_through_a_symlink(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "linked").symlink_to(elsewhere)
    with pytest.raises(InputError, match="leads outside"):
        case_dir(out, "linked")
    assert case_dir(out / "." / "", "plain").parent == out.resolve()


def test_empty_or_unreadable_manifest(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(InputError, match="empty"):
        read_manifest(write(tmp_path, "\n\n"))
    with pytest.raises(ManifestError, match="no cases"):
        read_manifest(write(tmp_path, HEADER))
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(HEADER.encode() + "caf\xe9,l.ply,\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_manifest(bad)


@pytest.fixture
def hashed_case(tmp_path):
    (tmp_path / "l.ply").write_bytes(b"left scan bytes")
    (tmp_path / "r.ply").write_bytes(b"right scan bytes")
    path = write(tmp_path, HEADER + 'c,l.ply,r.ply,6,left,,"arch.target_mm=16",note\n')
    (case,) = read_manifest(path).cases
    return tmp_path, case


def test_case_hash_changes_with_every_input(hashed_case):
    folder, case = hashed_case
    base = case_hash(case, "[arch]\n", "0.1.0")
    assert len(base) == 64 and base == case_hash(case, "[arch]\n", "0.1.0")
    (folder / "other.ply").write_bytes(b"left scan bytes!")
    from orthocad.prescribe import parse_overrides

    changed = [
        case_hash(dataclasses.replace(case, left_scan=folder / "other.ply"), "[arch]\n", "0.1.0"),
        case_hash(dataclasses.replace(case, right_scan=None), "[arch]\n", "0.1.0"),
        # the same bytes on the other side
        case_hash(dataclasses.replace(case, left_scan=case.right_scan, right_scan=case.left_scan),
                  "[arch]\n", "0.1.0"),
        case_hash(case, "[arch]\n\n", "0.1.0"),
        case_hash(case, None, "0.1.0"),
        case_hash(case, "[arch]\n", "0.1.1"),
        case_hash(dataclasses.replace(case, lld_mm=6.5), "[arch]\n", "0.1.0"),
        case_hash(dataclasses.replace(case, short_side=Side.RIGHT), "[arch]\n", "0.1.0"),
        case_hash(dataclasses.replace(case, overrides=parse_overrides(["arch.target_mm=17"])),
                  "[arch]\n", "0.1.0"),
        case_hash(dataclasses.replace(case, overrides=parse_overrides(["left.arch.target_mm=16"])),
                  "[arch]\n", "0.1.0"),
    ]
    assert len({base, *changed}) == len(changed) + 1
    (folder / "l.ply").write_bytes(b"left scan bytes, rescanned")
    assert case_hash(case, "[arch]\n", "0.1.0") != base


def test_case_hash_ignores_what_does_not_change_the_outputs(hashed_case):
    folder, case = hashed_case
    base = case_hash(case, "", "0.1.0")
    (folder / "copy").mkdir()
    copy = folder / "copy" / "elsewhere.ply"
    copy.write_bytes((folder / "l.ply").read_bytes())
    from orthocad.prescribe import parse_overrides

    same = [
        dataclasses.replace(case, case_id="renamed", notes="other", line=40),
        dataclasses.replace(case, left_scan=copy),
        dataclasses.replace(case, overrides=parse_overrides([" arch.target_mm = 16 ;"])),
    ]
    assert {case_hash(c, "", "0.1.0") for c in same} == {base}
    assert case_hash(case, None, "0.1.0") == base  # no parameter file: the defaults


def test_case_hash_of_a_missing_scan_fails_that_case_only(hashed_case):
    folder, case = hashed_case
    with pytest.raises(ScanReadError, match="cannot be read"):
        case_hash(dataclasses.replace(case, left_scan=folder / "gone.ply"), None, "0.1.0")


def test_manifest_error_exits_2_and_lists_its_lines(tmp_path):
    from orthocad.errors import ExitCode

    error = ManifestError(tmp_path / "m.csv", [(3, "case_id '..' is unsafe")])
    assert error.exit_code is ExitCode.BAD_INPUT
    assert str(error).endswith("\n  line 3: case_id '..' is unsafe")
