"""The batch: the manifest parsed exactly, refused whole with line numbers, safe folders;
cases run on a real Dask cluster, isolated and resumable."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import html
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orthocad import batch
from orthocad.batch import ManifestError, case_dir, case_hash, read_manifest
from orthocad.enums import CaseStatus, Side
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



# --- running a batch on Dask ----------------------------------------------------------------

BIN = Path(sys.executable).parent
FEET = {"left250": (Side.LEFT, 250.0), "right250": (Side.RIGHT, 250.0),
        "left270": (Side.LEFT, 270.0), "right270": (Side.RIGHT, 270.0)}
GOOD = ("P1,{s}/left250.ply,{s}/right250.ply,8,left,,,first visit\n"
        "R2,,{s}/right250.ply\n"
        'L3,{s}/left250.ply,,,,,"left.rearfoot_post_deg=3"\n'
        "R4,,{s}/right270.ply\n"
        "L5,{s}/left270.ply,\n"
        "R6,,{s}/right270.ply,,,,,second pair\n")
BAD = ("MISS,,{s}/no_such_scan.ply\n"
       "TRUNC,,{s}/truncated.ply\n")
IDS = ["P1", "R2", "L3", "R4", "L5", "R6", "MISS", "TRUNC"]


@pytest.fixture(scope="module")
def scan_folder(tmp_path_factory) -> Path:
    """Synthetic scans of known length (~45k points) and a truncated PLY."""
    from orthocad import scan, synthetic

    folder = tmp_path_factory.mktemp("batch_scans")
    for seed, (name, (side, length)) in enumerate(FEET.items()):
        data = synthetic.synth_scan(synthetic.FootShape(side=side, foot_length_mm=length),
                                    n_points=45_000, noise_mm=0.3, pose="random", seed=seed)
        scan.write(folder / f"{name}.ply", data.points)
    whole = (folder / "right250.ply").read_bytes()
    (folder / "truncated.ply").write_bytes(whole[: len(whole) // 3])
    return folder


def _stop(process: subprocess.Popen) -> None:
    """End a process started here and all it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # a worker process outliving its nanny
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and two one-thread ``dask worker`` processes; always torn down.

    The scheduler lets a task outlive one worker's death (Dask's default is 3),
    so two kills make a case fail.
    """
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    address_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    processes: list[subprocess.Popen] = []
    with (folder / "cluster.log").open("w") as log:
        def start(*args: str) -> None:
            processes.append(subprocess.Popen(
                [str(BIN / "dask"), *args, "--no-dashboard"], env=env, cwd=folder, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))

        try:
            start("scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                  "--scheduler-file", str(address_file))
            for name in ("w0", "w1"):
                start("worker", "--scheduler-file", str(address_file), "--nthreads", "1",
                      "--name", name, "--local-directory", str(folder))
            with Client(scheduler_file=str(address_file), timeout=60) as client:
                client.wait_for_workers(2, timeout=60)
                address = client.scheduler.address
            yield address
        finally:
            for process in reversed(processes):
                _stop(process)


def _manifest(folder: Path, rows: str, scans: Path, name: str = "manifest.csv") -> Path:
    return write(folder, HEADER + rows.replace("{s}", os.path.relpath(scans, folder)), name)


def _summary(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_batch_on_a_cluster_isolates_failures_summarises_and_resumes(
        cluster, scan_folder, tmp_path, capsys):
    from orthocad import __version__
    from orthocad.cli import main

    manifest = _manifest(tmp_path, GOOD + BAD, scan_folder)
    out = tmp_path / "out"
    calls = []
    result = batch.run_batch(manifest, out, scheduler=cluster,
                             progress=lambda tally, outcome: calls.append((tally, outcome)))

    # 6 succeed, the 2 bad ones fail alone with their reasons: exit 3
    status = {o.case_id: o.status for o in result.outcomes}
    assert [o.case_id for o in result.outcomes] == IDS
    assert status == {**dict.fromkeys(IDS[:6], CaseStatus.OK),
                      "MISS": CaseStatus.FAILED, "TRUNC": CaseStatus.FAILED}
    errors = {o.case_id: o.error for o in result.failed}
    assert "no_such_scan.ply: scan cannot be read" in errors["MISS"]
    assert "truncated" in errors["TRUNC"] and "\n" not in errors["TRUNC"]
    assert result.exit_code == 3
    assert calls[0] == (batch.Tally(total=8), None)
    assert sorted(outcome.case_id for _, outcome in calls[1:]) == sorted(IDS)
    assert calls[-1][0] == batch.Tally(total=8, ok=6, failed=2)

    # a folder per good case, nothing for the bad ones, no temporary left
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*IDS[:6], "summary.csv", "index.html"])
    cases = {case.case_id: case for case in read_manifest(manifest).cases}
    for case_id in IDS[:6]:
        marker = json.loads((out / case_id / "batch.json").read_text())
        assert marker["case_hash"] == case_hash(cases[case_id], None, __version__)
        assert (out / case_id / "report.html").is_file()

    # summary.csv: a row per case in manifest order, read from the cases' files
    rows = _summary(out)
    assert [r["case_id"] for r in rows] == IDS
    by_id = {r["case_id"]: r for r in rows}
    p1 = by_id["P1"]
    assert float(p1["left_foot_length_mm"]) == pytest.approx(250.0, abs=1.5)
    assert float(p1["right_foot_length_mm"]) == pytest.approx(250.0, abs=1.5)
    # 8 mm structural discrepancy, left short: 60 % of it under the left heel
    assert (p1["left_heel_lift_mm"], p1["right_heel_lift_mm"]) == ("4.8", "0.0")
    assert p1["notes"] == "first visit" and p1["status"] == "ok" and p1["error"] == ""
    rx = json.loads((out / "P1" / "right" / "P1_right_prescription.json").read_text())
    assert p1["right_device_length"] == rx["device_length"]
    m = json.loads((out / "P1" / "left" / "P1_left_measurements.json").read_text())
    assert (p1["left_arch_class"], p1["left_rearfoot_class"]) == (
        m["classification"]["arch"], m["classification"]["rearfoot"])
    assert by_id["L3"]["left_rearfoot_post_deg"] == "3.0"  # the row's override
    assert float(by_id["R4"]["right_foot_length_mm"]) == pytest.approx(270.0, abs=1.5)
    assert by_id["R2"]["left_foot_length_mm"] == "" and by_id["R2"]["left_stl"] == ""
    for row in rows[:6]:
        assert float(row["seconds"]) > 0 and row["finished_utc"]
        for column in ("folder", "report", "left_stl", "right_stl"):
            assert not row[column] or (out / row[column]).exists(), (row["case_id"], column)
    for row in rows[6:]:
        assert row["status"] == "failed" and row["error"] == errors[row["case_id"]]
        assert row["report"] == row["right_foot_length_mm"] == ""

    # index.html: a relative link to every report, every reason escaped
    page = (out / "index.html").read_text()
    for case_id in IDS[:6]:
        assert f'<a href="{case_id}/report.html">{case_id}</a>' in page
    for case_id in IDS[6:]:
        assert f"<td>{case_id}</td>" in page and f'href="{case_id}/' not in page
        assert html.escape(errors[case_id]) in page
    assert '<a href="summary.csv">' in page

    # rerun (the CLI): finished cases skipped and untouched, the bad ones fail again: exit 3
    before = _mtimes(out / "P1") | _mtimes(out / "R6")
    code = main(["batch", str(manifest), "--out", str(out), "--scheduler", cluster])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.splitlines() == [f"orthocad: {o.case_id} failed: {o.error}"
                                         for o in result.failed]
    assert "8 cases: 0 ok, 6 skipped (done before), 2 failed" in captured.out
    assert _mtimes(out / "P1") | _mtimes(out / "R6") == before
    again = _summary(out)
    assert [r["status"] for r in again] == ["skipped"] * 6 + ["failed"] * 2
    assert [{**r, "status": ""} for r in again[:6]] == [{**r, "status": ""} for r in rows[:6]]

    # a changed input (L3's override) redoes that case only
    _manifest(tmp_path, GOOD.replace("rearfoot_post_deg=3", "rearfoot_post_deg=2"), scan_folder)
    redone = batch.run_batch(manifest, out, scheduler=cluster)
    assert {o.case_id: o.status.value for o in redone.outcomes} == {
        **dict.fromkeys(IDS[:6], "skipped"), "L3": "ok"}
    assert _summary(out)[2]["left_rearfoot_post_deg"] == "2.0"
    assert redone.exit_code == 0

    # the task itself: skipped when done, redone with force
    r2 = read_manifest(manifest).cases[1]
    assert batch.process_case(r2, out / "R2").status is CaseStatus.SKIPPED
    marker = (out / "R2" / "batch.json").stat().st_mtime_ns
    assert batch.process_case(r2, out / "R2", force=True).status is CaseStatus.OK
    assert (out / "R2" / "batch.json").stat().st_mtime_ns > marker


def _kill_worker_running(client, case_id: str, *, not_on: str | None = None) -> str:
    """SIGKILL the worker process running the task of ``case_id`` (on a worker but ``not_on``)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if worker != not_on and any(key[1] == case_id for key in keys):
                pid = client.run(os.getpid, workers=[worker])[worker]
                os.kill(pid, signal.SIGKILL)
                return worker
        time.sleep(0.05)
    raise AssertionError(f"{case_id} never ran")


def _batch_in_thread(manifest: Path, out: Path, scheduler: str):
    """Start run_batch in a thread; return the thread and a list that receives its result."""
    done: list = []
    thread = threading.Thread(target=lambda: done.append(
        batch.run_batch(manifest, out, scheduler=scheduler)))
    thread.start()
    return thread, done


def test_a_dying_worker_is_retried_then_the_case_fails(cluster, scan_folder, tmp_path):
    from distributed import Client

    out = tmp_path / "out"
    with Client(cluster, timeout=30) as client:
        # one death: Dask reruns the case on another worker and it succeeds
        thread, done = _batch_in_thread(_manifest(tmp_path, "ONE,,{s}/right250.ply\n",
                                                  scan_folder, "one.csv"), out, cluster)
        _kill_worker_running(client, "ONE")
        thread.join(timeout=180)
        [(outcome,)] = [r.outcomes for r in done]
        assert outcome.status is CaseStatus.OK, outcome.error
        assert (out / "ONE" / "batch.json").is_file()

        # a death on each try: the case fails with the reason, nothing written for it
        thread, done = _batch_in_thread(_manifest(tmp_path, "TWO,,{s}/right250.ply\n",
                                                  scan_folder, "two.csv"), out, cluster)
        first = _kill_worker_running(client, "TWO")
        _kill_worker_running(client, "TWO", not_on=first)
        thread.join(timeout=180)
        [(outcome,)] = [r.outcomes for r in done]
        assert outcome.status is CaseStatus.FAILED and outcome.error.startswith("worker died")
        assert not (out / "TWO").exists()
        assert _summary(out)[0]["error"] == outcome.error
        client.wait_for_workers(2, timeout=60)  # the nannies restart their workers


def test_kill_9_mid_batch_then_resume(scan_folder, tmp_path):
    ids = ["R2", "L3", "R4", "L5"]  # one foot each: the quickest cases
    manifest = _manifest(tmp_path, "".join(row for row in GOOD.splitlines(keepends=True)
                                           if row.split(",")[0] in ids), scan_folder)
    out = tmp_path / "out"
    command = [str(BIN / "orthocad"), "batch", str(manifest), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("*/batch.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the batch and its local cluster's workers
        process.wait()
    finished = sorted(p.parent.name for p in out.glob("*/batch.json"))
    assert finished and len(finished) < len(ids)
    untouched = {case_id: _mtimes(out / case_id) for case_id in finished}
    (out / ".L5.killed.tmp" / "left").mkdir(parents=True)  # as a kill while writing leaves it
    (out / ".summary.csv.killed.part").write_text("half")

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # piped: no progress display
    assert sorted(p.name for p in out.iterdir()) == sorted([*ids, "summary.csv", "index.html"])
    assert {case_id: _mtimes(out / case_id) for case_id in finished} == untouched
    rows = _summary(out)
    assert [r["case_id"] for r in rows] == ids
    assert {r["case_id"] for r in rows if r["status"] == "skipped"} == set(finished)
    assert {r["case_id"] for r in rows if r["status"] == "ok"} == set(ids) - set(finished)
    for case_id in ids:  # each folder whole, once: its side's files and nothing else
        assert [p.name for p in (out / case_id).iterdir() if p.name in ("left", "right")] == [
            "left" if case_id.startswith("L") else "right"]
        assert len(list((out / case_id).rglob("*.stl"))) == 1
        assert not [p for p in (out / case_id).rglob(".*")]


def test_a_bad_manifest_or_scheduler_exits_2_and_writes_nothing(tmp_path, capsys,
                                                                  monkeypatch):
    from orthocad.cli import main

    manifest = write(tmp_path, HEADER + "ok,l.ply,\n../escape,l.ply,\nok,r.ply,\n")
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 3: case_id '../escape' is unsafe" in err and "line 4:" in err
    assert main(["batch", str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    taken = write(tmp_path, HEADER + "a,l.ply,\nSummary.csv,l.ply,\n", "taken.csv")
    assert main(["batch", str(taken), "--out", str(out)]) == 2
    assert "line 3: case_id 'Summary.csv' is the name of the batch's summary.csv" in (
        capsys.readouterr().err)
    good = write(tmp_path, HEADER + "ok,l.ply,\n", "good.csv")
    assert main(["batch", str(good), "--out", str(out), "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "give one of them" in capsys.readouterr().err
    monkeypatch.setattr(batch, "CONNECT_TIMEOUT_S", 1)
    assert main(["batch", str(good), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists()


def test_process_case_turns_every_failure_into_the_case_s_outcome(scan_folder, tmp_path):
    manifest = _manifest(tmp_path, "A,,{s}/right250.ply,,,missing.toml\nB,,{s}/none.ply\n",
                         scan_folder)
    a, b = read_manifest(manifest).cases
    failed = batch.process_case(a, tmp_path / "out" / "A")
    assert failed.status is CaseStatus.FAILED and failed.case_id == "A"
    assert "missing.toml: parameter file cannot be read" in failed.error
    assert "none.ply: scan cannot be read" in batch.process_case(b, tmp_path / "B").error
    assert not (tmp_path / "out").exists() and not (tmp_path / "B").exists()
