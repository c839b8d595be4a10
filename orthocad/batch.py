"""Batch production: the manifest, safe per-case folders and the resumability hash.

A manifest is a CSV file (UTF-8, a BOM and CRLF line ends are fine) with a
header row naming its columns, in any order:

=============  ========  ===============================================================
column         required  cell
=============  ========  ===============================================================
case_id        yes       the case's name, also its output folder (see below)
left_scan      yes       scan of the left foot, relative to the manifest's folder; may be
                         empty
right_scan     yes       likewise for the right foot; a case needs at least one scan
lld_mm         no        leg-length discrepancy in mm, 0..``LLD_LIMIT_MM``; empty is 0
short_side     no        ``left`` or ``right``: the short leg; required when lld_mm > 0
params         no        parameter file (TOML), relative to the manifest's folder
overrides      no        ``--set`` items joined by ``;`` (``arch.target_mm=16;
                         right.rearfoot_post_deg=3``)
notes          no        free text, carried to the summary
=============  ========  ===============================================================

Header names and cells are stripped of surrounding whitespace; blank rows are
skipped. The structure is checked whole before any work: every problem is
collected with its line number and a bad manifest is refused with one
:class:`ManifestError` that lists them all. A scan or parameter file that is
missing or unreadable is *not* a structural problem: that case fails alone
when it runs.

A case id is 1 to ``CASE_ID_MAX`` characters from ``A-Z a-z 0-9 . _ -``,
starting with a letter or a digit (so never ``.``, ``..``, a hidden name or
an option-like ``-x``), and not a name Windows reserves for a device (``CON``,
``NUL``, ``COM1`` …, with or without an extension), since outputs often live
on shared storage. Ids are unique ignoring case (case-insensitive file systems
would merge their folders). :func:`case_dir` is the only way to turn an id into
a folder and it checks that the folder lies inside the output folder.

Running a batch (:func:`run_batch`, ``orthocad batch``)
--------------------------------------------------------

Each case is one Dask task, :func:`process_case`, which takes the manifest row
and the case's folder (small arguments: the worker reads the scans and writes
the folder itself, so no array travels through the scheduler) and calls
:func:`orthocad.run.run_case`. By default the tasks run on a local cluster of
worker processes, one per core, each with one thread (and ``THREAD_LIMITS`` for
OpenMP/BLAS, which open3d and numpy use): cases run in parallel across
processes, and threads inside a case would only compete with them. With
``scheduler`` they run on an existing cluster::

    dask scheduler                        # on one machine: it listens on tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers N --memory-limit 0   # on each machine

with N the machine's cores (a case needs about 1 GB of memory). Every machine
needs the same orthocad installed and must see the manifest, the scans and the
output folder at the same paths (shared storage). ``dask worker`` starts its
workers through a nanny, which sets ``OMP_NUM_THREADS`` and the like to 1
(Dask's ``distributed.nanny.pre-spawn-environ``); with ``--no-nanny`` set them
yourself. ``--memory-limit 0``: a case's arrays are not Dask's to spill, and
Dask's default limit (memory / workers) can pause or restart busy workers.

A case whose worker dies is retried on another worker a bounded number of
times (the scheduler's ``distributed.scheduler.allowed-failures``:
``WORKER_RETRIES`` on the local cluster; for ``dask scheduler`` set
``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=2``, Dask's default is 3), then
it fails with "worker died". For an even load, also set
``DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION=1.0`` there: a worker then
holds only the case it runs (the local cluster does this).

Isolation: a case's failure, whatever raised it, is recorded with a one-line
reason and the other cases go on. Resuming: a finished case's folder holds
``batch.json`` with the case's :func:`case_hash`, written once
:func:`~orthocad.run.run_case` has renamed the complete folder into place; a
rerun skips the cases whose hash matches (``force`` redoes them), redoes a
folder without it, and first removes the temporary folders a killed run left
(``.ID.*.tmp``). One batch at a time per output folder. Killing the client of
a remote cluster does not stop the cases its workers are running: let them
finish (the dashboard, or ``client.processing()``) before rerunning.

The batch writes ``summary.csv`` (a row per case: status, reason, key
measurements and prescription fields per side, warnings, time, paths relative
to the output folder; skipped cases are read back from their folders) and
``index.html`` (a link to every report), each atomically.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from orthocad import __version__
from orthocad.enums import CaseStatus, Side
from orthocad.errors import ExitCode, InputError, OrthocadError, ParameterError
from orthocad.prescribe import LLD_LIMIT_MM, Overrides, parse_overrides

if TYPE_CHECKING:
    from distributed import Client, Future

COLUMNS = ("case_id", "left_scan", "right_scan", "lld_mm", "short_side", "params", "overrides",
           "notes")
REQUIRED_COLUMNS = ("case_id", "left_scan", "right_scan")
CASE_ID_MAX = 40  #: longest case id: as :data:`orthocad.insole.CASE_ID` (ids are engraved)
CASE_ID_RULE = (f"1-{CASE_ID_MAX} characters from A-Z a-z 0-9 . _ -, starting with a letter or "
                "a digit, not a Windows device name")

_CASE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{CASE_ID_MAX - 1}}}")
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_HASH_CHUNK = 1 << 20


class ManifestError(InputError):
    """A manifest with structural problems, refused whole; ``problems`` lists (line, text)."""

    def __init__(self, path: Path, problems: list[tuple[int, str]]) -> None:
        self.path = path
        self.problems = tuple(problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        lines = "\n".join(f"  line {line}: {text}" if line else f"  {text}"
                          for line, text in problems)
        super().__init__(f"{path}: manifest refused, {count}; fix them and rerun "
                         f"(nothing was processed):\n{lines}")


@dataclass(frozen=True)
class Case:
    """One manifest row, checked; paths are absolute (resolved against the manifest's folder)."""

    case_id: str
    left_scan: Path | None
    right_scan: Path | None
    lld_mm: float
    short_side: Side | None
    params: Path | None
    overrides: Overrides
    notes: str
    line: int  #: line of the manifest where the row starts

    @property
    def scans(self) -> dict[Side, Path]:
        """The scans given, by side."""
        pairs = ((Side.LEFT, self.left_scan), (Side.RIGHT, self.right_scan))
        return {side: path for side, path in pairs if path is not None}


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: its cases in file order."""

    path: Path
    cases: tuple[Case, ...]


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest (see the module doc); raise :class:`ManifestError` if bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: manifest not found; check the path") from None
    except UnicodeDecodeError as bad:
        raise InputError(f"{path}: manifest is not UTF-8 text ({bad.reason} at byte "
                         f"{bad.start}); save it as UTF-8 CSV") from None
    except OSError as bad:
        raise InputError(f"{path}: manifest cannot be read ({bad.strerror}); check the path "
                         "and its permissions") from None
    folder = path.resolve().parent
    problems: list[tuple[int, str]] = []
    rows = _rows(text, path, problems)
    header = _header(*rows[0], problems)
    if any(name not in header for name in REQUIRED_COLUMNS):
        raise ManifestError(path, problems)  # the rows cannot be read without these columns
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for line, cells in rows[1:]:
        if len(cells) > len(header):
            problems.append((line, f"{len(cells)} cells but the header has {len(header)} "
                                   "columns; quote cells that contain commas"))
            continue
        if any(cell for name, cell in zip(header, cells, strict=False) if not name):
            problems.append((line, "a cell under a column without a name; name the column "
                                   "or move the cell"))
        row = dict(zip(header, cells, strict=False))
        case_id = row.get("case_id", "")
        first = seen.setdefault(case_id.casefold(), line)
        if first != line and not check_case_id(case_id):
            problems.append((line, f"case_id {case_id!r} repeats the id on line {first} "
                                   "(ids are unique, ignoring case); rename one"))
        case = _case(row, line, folder, problems)
        if case is not None:
            cases.append(case)
    if not problems and not cases:
        problems.append((0, "no cases: add one row per case under the header"))
    if problems:
        raise ManifestError(path, sorted(problems, key=lambda p: p[0]))
    return Manifest(path=path, cases=tuple(cases))


def check_case_id(case_id: str) -> str | None:
    """Why ``case_id`` is unsafe as a folder name, or None when it is safe."""
    if not case_id:
        return "case_id is empty"
    if not _CASE_ID.fullmatch(case_id):
        return f"case_id {case_id!r} is unsafe: use {CASE_ID_RULE}"
    if _WINDOWS_DEVICES.fullmatch(case_id):
        return f"case_id {case_id!r} is a Windows device name; rename it"
    return None


def case_dir(out: str | Path, case_id: str) -> Path:
    """The folder of ``case_id`` under ``out``, guaranteed inside ``out`` (symlinks resolved)."""
    problem = check_case_id(case_id)
    if problem:
        raise InputError(f"{problem}")
    root = Path(out).resolve()
    folder = (root / case_id).resolve()
    if folder.parent != root:
        raise InputError(f"{root / case_id} leads outside {root} (a symbolic link?); "
                         "remove it or choose another --out")
    return folder


def case_hash(case: Case, params_text: str | None, version: str) -> str:
    """SHA-256 of everything a case's outputs depend on: equal inputs, equal hash.

    It covers the scans' contents (not their paths), the parameter file's text
    (``params_text``; None or empty for the defaults), the overrides, the
    leg-length discrepancy and its side, and the orthocad ``version``; not the
    case id, the notes or the manifest line. A missing scan raises
    :class:`~orthocad.errors.ScanReadError` (that case fails alone).
    """
    content = {
        "scans": {side.value: _file_sha256(path) for side, path in case.scans.items()},
        "params": params_text or "",
        "overrides": {"params": _by_side(case.overrides.params),
                      "fields": _by_side(case.overrides.fields)},
        "lld_mm": case.lld_mm,
        "short_side": case.short_side.value if case.short_side else None,
        "version": version,
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- running --------------------------------------------------------------------------------

MARKER = "batch.json"  #: in a finished case's folder: its hash, time and host
SUMMARY = "summary.csv"
INDEX = "index.html"
#: Environment of the local cluster's workers: one thread each for OpenMP and BLAS.
THREAD_LIMITS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: A case whose worker dies is retried this many times on the local cluster, then fails.
WORKER_RETRIES = 2
CONNECT_TIMEOUT_S = 10  #: to reach a scheduler and find a worker on it
_SIDE_COLUMNS = ("foot_length_mm", "arch_class", "rearfoot_class", "device_length",
                 "rearfoot_post_deg", "heel_lift_mm", "stl")
SUMMARY_COLUMNS = ("case_id", "status", "error",
                   *(f"{side}_{name}" for side in ("left", "right") for name in _SIDE_COLUMNS),
                   "warnings", "seconds", "finished_utc", "folder", "report", "notes")
_LEFTOVER_SUFFIXES = (".tmp", ".old", ".part")  # run_case's and this module's temporary names


@dataclass(frozen=True)
class CaseOutcome:
    """How one case ended; ``seconds`` is the time of the run that made its outputs."""

    case_id: str
    status: CaseStatus
    error: str = ""  #: one line: what went wrong and what to do (failed cases)
    seconds: float = 0.0


@dataclass(frozen=True)
class Tally:
    """Cases counted so far (for a progress display)."""

    total: int
    ok: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.skipped + self.failed

    @property
    def remaining(self) -> int:
        return self.total - self.done

    def add(self, outcome: CaseOutcome) -> Tally:
        name = outcome.status.value
        return dataclasses.replace(self, **{name: getattr(self, name) + 1})


#: progress(tally, outcome): called once with None before the first case ends, then per case.
BatchProgress = Callable[[Tally, "CaseOutcome | None"], None]


@dataclass(frozen=True)
class BatchResult:
    """A finished batch: every case's outcome in manifest order, and the files written."""

    out: Path
    outcomes: tuple[CaseOutcome, ...]
    summary: Path
    index: Path

    def count(self, status: CaseStatus) -> int:
        return sum(outcome.status is status for outcome in self.outcomes)

    @property
    def failed(self) -> tuple[CaseOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is CaseStatus.FAILED)

    @property
    def exit_code(self) -> ExitCode:
        """OK when every case succeeded (skipped included), REJECTED when some failed."""
        return ExitCode.REJECTED if self.failed else ExitCode.OK


def run_batch(manifest: Manifest | str | Path, out: str | Path, *, workers: int | None = None,
              scheduler: str | None = None, force: bool = False,
              progress: BatchProgress | None = None) -> BatchResult:
    """Run every case of ``manifest`` into ``out`` on Dask; see the module doc.

    ``workers``: processes of the local cluster (default one per core, at most
    one per case); ``scheduler``: the address of a running cluster to use
    instead; ``force``: redo cases already done with the same inputs. A bad
    manifest, an unusable ``out`` or an unreachable scheduler raise
    :class:`~orthocad.errors.InputError` before anything is written; a case's
    failure never raises (see :attr:`BatchResult.exit_code`).
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    if workers is not None and scheduler:
        raise InputError("--workers sizes the local cluster; with --scheduler the cluster's own "
                         "workers run the cases: give one of them")
    if workers is not None and workers < 1:
        raise InputError(f"workers = {workers}: give at least 1")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for --out")
    taken = [(case.line, f"case_id {case.case_id!r} is the name of the batch's "
                         f"{case.case_id.lower()}; rename the case")
             for case in manifest.cases if case.case_id.lower() in (SUMMARY, INDEX)]
    if taken:
        raise ManifestError(manifest.path, taken)
    folders = {case.case_id: case_dir(out, case.case_id) for case in manifest.cases}
    with _client(workers=workers, scheduler=scheduler, cases=len(manifest.cases)) as client:
        out.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(out, folders)
        outcomes = _run_cases(client, manifest.cases, folders, force=force,
                              progress=progress or (lambda tally, outcome: None))
    rows = []
    for case in manifest.cases:
        outcome, row = _summary_row(case, outcomes[case.case_id], folders[case.case_id], out)
        outcomes[case.case_id] = outcome
        rows.append(row)
    summary, index = out / SUMMARY, out / INDEX
    _write_text(summary, _summary_csv(rows))
    _write_text(index, _index_html(rows, manifest.path.name))
    return BatchResult(out=out, outcomes=tuple(outcomes[c.case_id] for c in manifest.cases),
                       summary=summary, index=index)


def process_case(case: Case, folder: Path, *, force: bool = False) -> CaseOutcome:
    """One case on a worker: skipped when done with the same hash, else run; never raises.

    Whatever goes wrong becomes this case's failure with a one-line reason, so
    the other cases go on.
    """
    started = time.perf_counter()
    try:
        digest = case_hash(case, _params_text(case), __version__)
        if not force and _finished_hash(folder) == digest:
            return CaseOutcome(case.case_id, CaseStatus.SKIPPED)
        from orthocad import export
        from orthocad.run import CaseInputs, run_case

        run_case(CaseInputs(case_id=case.case_id, left=case.left_scan, right=case.right_scan,
                            lld_mm=case.lld_mm, short_side=case.short_side,
                            params_file=case.params, overrides=case.overrides), folder)
        seconds = round(time.perf_counter() - started, 3)
        # Written last: a folder without it (a run killed just before) is redone.
        export.write_json(folder / MARKER, {
            "case_id": case.case_id, "case_hash": digest, "orthocad_version": __version__,
            "seconds": seconds, "host": socket.gethostname(),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds")})
        return CaseOutcome(case.case_id, CaseStatus.OK, seconds=seconds)
    except Exception as error:  # isolation: any failure is this case's alone
        reason = (_one_line(error) if isinstance(error, OrthocadError) else
                  f"internal error: {type(error).__name__}: {_one_line(error)} (a bug: run the "
                  "case alone with `orthocad --debug run` and report it)")
        return CaseOutcome(case.case_id, CaseStatus.FAILED, error=reason,
                           seconds=round(time.perf_counter() - started, 3))


def _params_text(case: Case) -> str | None:
    if case.params is None:
        return None
    try:
        return case.params.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as bad:
        why = bad.strerror if isinstance(bad, OSError) else "not UTF-8 text"
        raise ParameterError(f"{case.params}: parameter file cannot be read ({why}); check the "
                             "manifest's params cell") from None


def _finished_hash(folder: Path) -> str | None:
    """The hash a finished case's folder was made from; None when it is not finished."""
    from orthocad.run import CASE_FILE

    try:
        if not (folder / CASE_FILE).is_file():
            return None
        return json.loads((folder / MARKER).read_text(encoding="utf-8")).get("case_hash")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _client(*, workers: int | None, scheduler: str | None, cases: int) -> Iterator[Client]:
    """A Dask client: of the cluster at ``scheduler``, or of a new local cluster."""
    import dask
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as bad:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler} ({_one_line(bad)}); "
                             "start it with `dask scheduler` or check the address") from None
        with client:
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise InputError(f"the Dask cluster at {scheduler} has no workers; start some "
                                 f"with `dask worker {scheduler} --nthreads 1`") from None
            yield client
        return
    settings = {"distributed.scheduler.allowed-failures": WORKER_RETRIES,
                # one case at a time per worker: a long case never holds others back
                "distributed.scheduler.worker-saturation": 1.0}
    # The scheduler serves HTTP even without a dashboard: any free port, never a clash on 8787.
    # No memory limit: a case's arrays are not Dask's to spill, and Dask's default limit (the
    # machine's memory / workers) would pause or restart workers on many-core small machines.
    with (dask.config.set(settings),
          LocalCluster(n_workers=min(workers or CPU_COUNT, cases), threads_per_worker=1,
                       processes=True, memory_limit=0, dashboard_address=":0",
                       silence_logs=logging.ERROR, env=THREAD_LIMITS) as cluster,
          Client(cluster) as client):
        yield client


def _remove_leftovers(out: Path, folders: Mapping[str, Path]) -> None:
    """Remove the temporary folders and files a killed run left in ``out``."""
    owners = tuple(f".{name}." for name in (*folders, SUMMARY, INDEX))
    for entry in out.iterdir():
        if entry.name.startswith(owners) and entry.name.endswith(_LEFTOVER_SUFFIXES):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _run_cases(client: Client, cases: tuple[Case, ...], folders: Mapping[str, Path], *,
               force: bool, progress: BatchProgress) -> dict[str, CaseOutcome]:
    from distributed import as_completed

    # One key prefix per batch: the tasks form one Dask task group; never another batch's.
    batch = f"orthocad-case-{uuid.uuid4().hex}"
    futures = {client.submit(process_case, case, folders[case.case_id], force=force,
                             key=(batch, case.case_id), pure=False): case for case in cases}
    tally = Tally(total=len(cases))
    progress(tally, None)
    outcomes: dict[str, CaseOutcome] = {}
    for future in as_completed(futures):
        outcome = _collect(future, futures[future])
        future.release()
        outcomes[outcome.case_id] = outcome
        tally = tally.add(outcome)
        progress(tally, outcome)
    return outcomes


def _collect(future: Future, case: Case) -> CaseOutcome:
    """The task's outcome, or the case's failure when Dask could not run it."""
    from distributed import KilledWorker

    if future.status == "finished":
        return future.result()
    if future.status == "cancelled":
        reason = ("cancelled: the Dask cluster dropped it (scheduler restarted?); rerun the "
                  "batch to finish it")
    elif isinstance(error := future.exception(), KilledWorker):
        reason = ("worker died: the worker running it died each time it was tried (out of "
                  "memory, or a crash in a library?); run the case alone with `orthocad run`")
    else:  # e.g. a worker without orthocad installed
        reason = f"the worker could not run it: {type(error).__name__}: {_one_line(error)}"
    return CaseOutcome(case.case_id, CaseStatus.FAILED, error=reason)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# --- summary and index ----------------------------------------------------------------------


def _summary_row(case: Case, outcome: CaseOutcome, folder: Path, out: Path
                 ) -> tuple[CaseOutcome, dict[str, Any]]:
    """The case's summary row (its outputs read back from its folder) and its final outcome."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, "")
    row.update(case_id=case.case_id, status=outcome.status.value, error=outcome.error,
               seconds=outcome.seconds, notes=case.notes)
    if outcome.status is CaseStatus.FAILED:
        return outcome, row
    try:
        row.update(_outputs(folder, out.resolve()))
    except (OSError, ValueError, KeyError, TypeError) as bad:
        outcome = CaseOutcome(case.case_id, CaseStatus.FAILED,
                              error=f"its folder cannot be read back ({_one_line(bad)}); "
                                    f"delete {folder / MARKER} and rerun the batch to redo it")
        row.update(status=outcome.status.value, error=outcome.error)
    return outcome, row


def _outputs(folder: Path, root: Path) -> dict[str, Any]:
    """Summary fields from a finished case's folder (its JSON files)."""
    from orthocad.report import REPORT_NAME
    from orthocad.run import CASE_FILE

    record = _read_json(folder / CASE_FILE)
    marker = _read_json(folder / MARKER)
    values: dict[str, Any] = {
        "seconds": marker["seconds"], "finished_utc": marker["finished_utc"],
        "warnings": " | ".join(record["warnings"]),
        "folder": folder.relative_to(root).as_posix(),
        "report": (folder / REPORT_NAME).relative_to(root).as_posix(),
    }
    for foot in record["feet"]:
        side = foot["side"]
        files = {Path(name).name.removeprefix(f"{record['case_id']}_{side}"): folder / name
                 for name in foot["files"]}
        measured = _read_json(files["_measurements.json"])
        device = _read_json(files["_prescription.json"])
        values.update({
            f"{side}_foot_length_mm": round(measured["foot_length_mm"], 1),
            f"{side}_arch_class": measured["classification"]["arch"] or "",
            f"{side}_rearfoot_class": measured["classification"]["rearfoot"] or "",
            f"{side}_device_length": device["device_length"],
            f"{side}_rearfoot_post_deg": device["rearfoot_post_deg"],
            f"{side}_heel_lift_mm": device["heel_lift_mm"],
            f"{side}_stl": files[".stl"].relative_to(root).as_posix(),
        })
    return values


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _summary_csv(rows: list[dict[str, Any]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


_INDEX_SIDE = (("foot_length_mm", "length mm"), ("arch_class", "arch"),
               ("rearfoot_class", "rearfoot"), ("device_length", "device"),
               ("rearfoot_post_deg", "post °"), ("heel_lift_mm", "lift mm"))
_INDEX_COLUMNS = (("status", "status"),
                  *((f"{side}_{key}", f"{side} {label}") for side in ("left", "right")
                    for key, label in _INDEX_SIDE),
                  ("seconds", "s"), ("error", "reason"))


def _index_html(rows: list[dict[str, Any]], manifest_name: str) -> str:
    """A page linking every case's report (relative links, every value escaped)."""
    counts = {status: sum(row["status"] == status.value for row in rows) for status in CaseStatus}
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in _INDEX_COLUMNS)
    body = []
    for row in rows:
        name = html.escape(row["case_id"])
        case = (f'<a href="{html.escape(quote(row["report"]))}">{name}</a>' if row["report"]
                else name)
        cells = "".join(f"<td>{html.escape(str(row[key]))}</td>" for key, _ in _INDEX_COLUMNS)
        body.append(f'<tr class="{html.escape(row["status"])}"><td>{case}</td>{cells}</tr>')
    title = f"orthocad batch: {manifest_name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }}
tr.failed td {{ background: #fde2e2; }}
tr.skipped td {{ color: #555; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} cases: {counts[CaseStatus.OK]} ok, {counts[CaseStatus.SKIPPED]} skipped (done
before with the same inputs), {counts[CaseStatus.FAILED]} failed.
All fields: <a href="{quote(SUMMARY)}">{SUMMARY}</a>.</p>
<table><thead><tr><th>case</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.chmod(name, 0o644)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


# --- parsing --------------------------------------------------------------------------------


def _rows(text: str, path: Path, problems: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows with the line each starts on, cells stripped."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            stripped = [cell.strip() for cell in cells]
            if any(stripped):
                rows.append((start, stripped))
            start = reader.line_num + 1
    except csv.Error as bad:
        problems.append((start, f"not valid CSV ({bad}); check the quotes"))
    if not rows:
        raise InputError(f"{path}: manifest is empty; give a header row ({', '.join(COLUMNS)}) "
                         "and one row per case")
    return rows


def _header(line: int, cells: list[str], problems: list[tuple[int, str]]) -> list[str]:
    """Column names, lower case; unnamed columns ("") are allowed while their cells are empty."""
    header = [cell.lower() for cell in cells]
    unknown = [name for name in header if name and name not in COLUMNS]
    if unknown:
        problems.append((line, f"unknown column{'s' if len(unknown) > 1 else ''} "
                            f"{', '.join(map(repr, unknown))}; the columns are "
                            f"{', '.join(COLUMNS)}"))
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        problems.append((line, f"column{'s' if len(repeated) > 1 else ''} "
                            f"{', '.join(repeated)} given twice; keep one"))
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        problems.append((line, f"missing required column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(missing)}; the header needs "
                            f"{', '.join(REQUIRED_COLUMNS)}"))
    return header


def _case(row: dict[str, str], line: int, folder: Path,
          problems: list[tuple[int, str]]) -> Case | None:
    """One row checked; its problems appended; None when it cannot form a case."""
    found: list[str] = []
    case_id = row.get("case_id", "")
    unsafe = check_case_id(case_id)
    if unsafe:
        found.append(unsafe)
    left, right = _path(row.get("left_scan"), folder), _path(row.get("right_scan"), folder)
    if left is None and right is None:
        found.append("no scan: give left_scan, right_scan or both")
    lld = _lld(row.get("lld_mm", ""), found)
    short = _side(row.get("short_side", ""), found)
    if lld and not row.get("short_side"):
        found.append(f"lld_mm = {lld:g} needs short_side (left or right)")
    overrides = _overrides(row.get("overrides", ""), found)
    problems.extend((line, text) for text in found)
    if found:
        return None
    return Case(case_id=case_id, left_scan=left, right_scan=right, lld_mm=lld, short_side=short,
                params=_path(row.get("params"), folder), overrides=overrides,
                notes=row.get("notes", ""), line=line)


def _path(cell: str | None, folder: Path) -> Path | None:
    return (folder / cell).resolve() if cell else None


def _lld(cell: str, found: list[str]) -> float:
    if not cell:
        return 0.0
    try:
        value = float(cell)
    except ValueError:
        found.append(f"lld_mm {cell!r} is not a number; give millimetres, e.g. 8")
        return 0.0
    if not math.isfinite(value) or not 0.0 <= value <= LLD_LIMIT_MM:
        found.append(f"lld_mm {cell!r} is outside 0..{LLD_LIMIT_MM:g} mm")
        return 0.0
    return value


def _side(cell: str, found: list[str]) -> Side | None:
    if not cell:
        return None
    if cell.lower() in (Side.LEFT.value, Side.RIGHT.value):
        return Side(cell.lower())
    found.append(f"short_side {cell!r} is not left or right")
    return None


def _overrides(cell: str, found: list[str]) -> Overrides:
    try:
        return parse_overrides([cell], where="overrides")
    except OrthocadError as bad:
        # The unknown-key message lists every key; once per row is too much in a list.
        text, _, _ = str(bad).partition("; parameters: ")
        found.append(text if text == str(bad) else f"{text}; list them with `orthocad params "
                                                   "--dump`")
        return parse_overrides([])


# --- hashing --------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    from orthocad.errors import ScanReadError

    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as bad:
        raise ScanReadError(f"{path}: scan cannot be read ({bad.strerror}); check the manifest's "
                            "path") from None
    return digest.hexdigest()


def _by_side(groups: Mapping[Side | None, Mapping[str, Any]]) -> dict[str, Any]:
    """Overrides of one kind as plain data ("both" for side None), empty sides left out."""
    return {(side.value if side else "both"): dict(values)
            for side, values in groups.items() if values}
