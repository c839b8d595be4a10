"""One patient's case, from scans to a checked pair of insoles: ``orthocad run``.

:func:`run_case` reads each scan, frames, measures (quality gate),
prescribes, builds and validates each insole, and writes the case folder::

    OUT/left/ID_left.{stl,step,3mf}                 (and right/ likewise)
    OUT/left/ID_left_{measurements,prescription,validation}.json
    OUT/case.json      inputs with SHA-256, parameters, versions, timings, warnings
    OUT/report.html    + report_assets/, summary.png (orthocad.report)

Everything is written into a temporary folder beside ``OUT`` and renamed
into place at the end, so a failure leaves nothing half-written (and an
earlier run's folder stays as it was). Case ids are opaque: the folder and
file names carry the id, never a scan's file name.

Sides: a scan given as the left foot must look like a left foot (the side
cues of :mod:`orthocad.frame`), or the case is refused, unless
``trust_sides``, which takes the given side as true. A scan given without a
side may hold one foot or both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orthocad import __version__
from orthocad.enums import LldKind, Loading, OutputFrame, Side, Units
from orthocad.errors import InputError

if TYPE_CHECKING:
    from orthocad.frame import Foot
    from orthocad.measure import Measurements
    from orthocad.params import Params
    from orthocad.pipeline import InsoleResult
    from orthocad.prescribe import Overrides

#: Feet of one pair whose lengths differ by more than this get a warning.
PAIR_LENGTH_WARN_MM = 10.0
CASE_FILE = "case.json"
#: Packages whose versions case.json records (they decide the numbers and the files).
PACKAGES = ("numpy", "scipy", "trimesh", "open3d-cpu", "cadquery", "cadquery-ocp", "pydantic")

#: progress(stage, side): called as each stage starts (side None: the case as a whole)
Progress = Callable[[str, "Side | None"], None]


@dataclasses.dataclass(frozen=True)
class CaseInputs:
    """What the orthotist gives: the scans and the clinical inputs of one case."""

    case_id: str
    left: Path | None = None  #: scan of the left foot
    right: Path | None = None  #: scan of the right foot
    scan: Path | None = None  #: a scan whose side(s) are detected (one foot or both)
    lld_mm: float = 0.0
    short_side: Side | None = None
    lld_kind: LldKind = LldKind.STRUCTURAL
    loading: Loading = Loading.WEIGHT_BEARING
    units: Units = Units.AUTO
    params_file: Path | None = None
    overrides: Overrides | None = None
    trust_sides: bool = False
    force: bool = False
    output_frame: OutputFrame = OutputFrame.CANONICAL


@dataclasses.dataclass(frozen=True, eq=False)
class CaseResult:
    """A finished case: its folder, each foot's results and the case's warnings."""

    out_dir: Path
    feet: tuple[InsoleResult, ...]  #: left first
    warnings: tuple[str, ...]
    timings_s: dict[str, float]

    @property
    def report(self) -> Path:
        from orthocad.report import REPORT_NAME

        return self.out_dir / REPORT_NAME


def run_case(inputs: CaseInputs, out_dir: str | Path, *,
             progress: Progress | None = None, parallel: bool = False) -> CaseResult:
    """Run one case into ``out_dir`` (replaced whole if it exists); see the module doc.

    Raises :class:`~orthocad.errors.InputError` for unusable inputs (exit 2) and
    :class:`~orthocad.errors.RejectedError` for a scan failing the quality gate
    or an insole failing validation (exit 3; with ``force`` both are written,
    marked). Nothing is written unless the whole case succeeds.

    ``parallel`` reads and measures each scan in a forked process while this
    one imports the libraries it needs next (:func:`_case_forked`; Linux,
    outside daemonic processes, else it is ignored): the same files and the
    same errors, sooner. It is meant for a process of its own, as the CLI's.
    """
    from orthocad import export
    from orthocad import params as params_module

    out = Path(out_dir)
    case_id = export.check_case_id(inputs.case_id)
    step = progress or (lambda stage, side: None)
    clock: dict[str, float] = {}
    started = time.perf_counter()
    params = (params_module.load(inputs.params_file) if inputs.params_file
              else params_module.defaults())
    case = _case_forked if parallel and _can_fork() else _case_here
    results, work, scans = case(inputs, params, case_id, out, step, clock)
    try:
        warnings = _pair_warnings(results)
        clock["total_before_report"] = round(time.perf_counter() - started, 4)
        case_json = work / CASE_FILE
        export.write_json(case_json, _case_record(inputs, case_id, scans, params, results,
                                                  warnings, clock))
        step("report", None)
        _timed(clock, "report", _write_report, case_id, results, warnings, params, work,
               out / CASE_FILE)
        _swap_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    clock["total"] = round(time.perf_counter() - started, 4)
    return CaseResult(out_dir=out, feet=tuple(results), warnings=tuple(warnings),
                      timings_s=clock)


def _case_here(inputs: CaseInputs, params: Params, case_id: str, out: Path, step: Progress,
               clock: dict[str, float]
               ) -> tuple[list[InsoleResult], Path, list[tuple[str, Path, str]]]:
    """The case's feet designed and written into a new workspace, the workspace, and the
    scans (label, path, SHA-256): by this process, one stage after the other."""
    from orthocad import pipeline

    feet, scans = _framed_feet(inputs, step, clock)
    step("measure", None)
    measured = _timed(clock, "measure", pipeline.measure_feet, feet, loading=inputs.loading,
                      params=params, overrides=inputs.overrides, force=inputs.force,
                      name=case_id)
    return *_designed_and_written(feet, measured, inputs, params, case_id, out, step,
                                  clock), scans


def _designed_and_written(feet: list[Foot], measured: list[Measurements], inputs: CaseInputs,
                          params: Params, case_id: str, out: Path, step: Progress,
                          clock: dict[str, float]) -> tuple[list[InsoleResult], Path]:
    """Each measured foot's insole designed and written into a new workspace (returned)."""
    from orthocad import pipeline

    step("design", None)
    designs = pipeline.design_insoles(
        feet, measured, params=params, overrides=inputs.overrides, lld_mm=inputs.lld_mm,
        short_side=inputs.short_side, lld_kind=inputs.lld_kind, case_id=case_id,
        force=inputs.force, name=case_id)
    for d in designs:
        for stage, seconds in d.timings_s.items():
            clock[f"{d.foot.side.value}.{stage}"] = seconds
    step("write", None)
    work = _workspace(out)
    try:
        return _timed(clock, "write", _write_feet, designs, work, out, case_id, inputs), work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _framed_feet(inputs: CaseInputs, step: Progress, clock: dict[str, float]
                 ) -> tuple[list[Foot], list[tuple[str, Path, str]]]:
    """Each given scan read, cleaned and framed, with its side checked; left first."""
    feet: list[Foot] = []
    scans = []
    for declared, path in _given(inputs):
        found, sha256 = _scan_feet(declared, path, inputs, step, clock)
        feet += found
        scans.append((_label(declared), path, sha256))
    return _sides_checked(feet), scans


def _given(inputs: CaseInputs) -> list[tuple[Side, Path]]:
    """The scans given, each with the side it was given as (AUTO: detect)."""
    given = [(Side.LEFT, inputs.left), (Side.RIGHT, inputs.right), (Side.AUTO, inputs.scan)]
    given = [(side, Path(path)) for side, path in given if path is not None]
    if not given:
        raise InputError("no scan given: pass --left and/or --right, or one SCAN")
    if inputs.scan is not None and (inputs.left or inputs.right):
        raise InputError("give either SCAN or --left/--right, not both")
    return given


def _label(declared: Side) -> str:
    return declared.value if declared is not Side.AUTO else "scan"


def _scan_feet(declared: Side, path: Path, inputs: CaseInputs, step: Progress,
               clock: dict[str, float]) -> tuple[list[Foot], str]:
    """The feet of one scan, read, cleaned and framed, each checked against ``declared``;
    and the scan's SHA-256."""
    from orthocad import frame, pipeline
    from orthocad import scan as scan_module

    label = _label(declared)
    step("read", None if declared is Side.AUTO else declared)
    raw = _timed(clock, f"{label}.read", scan_module.read, path, units=inputs.units)
    cleaned = _timed(clock, f"{label}.clean", pipeline.split_and_clean, raw)
    if declared is not Side.AUTO and len(cleaned) > 1:
        raise InputError(f"{path.name}: given as the {declared.value} foot but holds two "
                         "feet; pass it as SCAN (both feet) or crop it")
    step("frame", None if declared is Side.AUTO else declared)
    feet = []
    for one in cleaned:
        foot = _timed(clock, f"{label}.frame", frame.canonical, one)
        if declared is not Side.AUTO and foot.side is not declared:
            if not inputs.trust_sides:
                raise InputError(
                    f"{path.name}: given as the {declared.value} foot but looks like a "
                    f"{foot.side.value} foot; check the files, or pass --trust-sides to "
                    "take the given side")
            foot = frame.canonical(one, side=declared)
        feet.append(foot)
    return feet, raw.sha256


def _sides_checked(feet: list[Foot]) -> list[Foot]:
    """The feet, left first; two feet of one side are refused."""
    sides = [foot.side for foot in feet]
    if len(set(sides)) != len(sides):
        raise InputError(f"two {sides[0].value} feet given; a case is one left and one right "
                         "foot (check the scans, or --trust-sides if their sides are known)")
    return sorted(feet, key=lambda foot: foot.side is not Side.LEFT)


def _pair_warnings(designs: list[InsoleResult]) -> list[str]:
    lengths = {d.foot.side: d.measurements.foot_length_mm for d in designs}
    if len(lengths) < 2:
        return []
    difference = abs(lengths[Side.LEFT] - lengths[Side.RIGHT])
    if difference <= PAIR_LENGTH_WARN_MM:
        return []
    return [f"the feet differ in length by {difference:.1f} mm (left "
            f"{lengths[Side.LEFT]:.1f}, right {lengths[Side.RIGHT]:.1f}; more than "
            f"{PAIR_LENGTH_WARN_MM:g} mm): check both scans are this patient's, complete and "
            "not cut off"]


def _write_feet(designs: list[InsoleResult], work: Path, out: Path, case_id: str,
                inputs: CaseInputs) -> list[InsoleResult]:
    from orthocad import pipeline

    results = []
    for d in designs:
        side = d.foot.side.value
        folder = work / side
        folder.mkdir()
        names = pipeline.write_foot_files(d, folder, stem=f"{case_id}_{side}", case_id=case_id,
                                          output_frame=inputs.output_frame, measurements=True)
        results.append(dataclasses.replace(
            d, paths=tuple(out / side / name.name for name in names)))
    return results


def _write_report(case_id: str, results: list[InsoleResult], warnings: list[str],
                  params: Params, work: Path, case_file: Path) -> None:
    from orthocad import report

    out = case_file.parent
    feet = tuple(
        report.FootReport(
            foot=r.foot, plantar=r.plantar, measurements=r.measurements,
            prescription=r.prescription, insole=r.insole, validation=r.validation.to_dict(),
            files=tuple(work / p.relative_to(out) for p in r.paths))
        for r in results)
    case = report.CaseReport(case_id=case_id, feet=feet, warnings=tuple(warnings),
                             files=(work / CASE_FILE,), params=params)
    report.write_report(case, work)


def _case_record(inputs: CaseInputs, case_id: str, scans: list[tuple[str, Path, str]],
                 params: Params, results: list[InsoleResult], warnings: list[str],
                 timings: dict[str, float]) -> dict:
    from orthocad import params as params_module

    return {
        "case_id": case_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "orthocad_version": __version__,
        "packages": _package_versions(),
        # a scan's file name may carry a patient's name: only its content hash is kept
        "scans": [{"given_as": label, "sha256": sha} for label, _, sha in scans],
        "inputs": {
            "lld_mm": inputs.lld_mm,
            "short_side": inputs.short_side.value if inputs.short_side else None,
            "lld_kind": inputs.lld_kind.value, "loading": inputs.loading.value,
            "units": inputs.units.value, "trust_sides": inputs.trust_sides,
            "force": inputs.force, "frame": inputs.output_frame.value,
            "overrides": inputs.overrides.to_dict() if inputs.overrides else {},
        },
        "feet": [{
            "side": r.foot.side.value,
            "side_detected": r.foot.side_detected,
            "params": r.params.model_dump(mode="json"),
            "params_sha256": params_module.digest(r.params),
            "quality_passed": r.measurements.quality.passed,
            "quality_forced": r.measurements.quality.forced,
            "validation_passed": r.validation.passed,
            "validation_forced": r.validation.forced,
            "files": [p.relative_to(r.paths[0].parents[1]).as_posix() for p in r.paths],
        } for r in results],
        "params_sha256": params_module.digest(params),
        "warnings": warnings + [w for r in results for w in r.prescription.warnings],
        "timings_s": timings,
    }


def _package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _timed(clock: dict[str, float], stage: str, fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        clock[stage] = round(clock.get(stage, 0.0) + time.perf_counter() - start, 4)


def _workspace(out: Path) -> Path:
    """A temporary folder beside ``out`` (same file system, so it can be renamed into place)."""
    from orthocad.export import umask

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    work.chmod(0o777 & ~umask())  # a case folder, not a secret: the mode mkdir would give
    return work


def _swap_into_place(work: Path, out: Path) -> None:
    """Rename ``work`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)



# --- the same work, forked (``parallel``) ----------------------------------------------------


def _can_fork() -> bool:
    import multiprocessing

    # fork is Linux's default and cheap; a daemonic process (a batch worker) may have no children
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def _case_forked(inputs: CaseInputs, params: Params, case_id: str, out: Path, step: Progress,
                 clock: dict[str, float]
                 ) -> tuple[list[InsoleResult], Path, list[tuple[str, Path, str]]]:
    """What :func:`_case_here` gives, with each scan read, cleaned and framed, and its feet
    measured, in a forked child of its own.

    Meanwhile this process imports CadQuery and matplotlib (≈ 2 s it spends
    anyway), then designs and writes the feet as :func:`_case_here` does. A
    fork starts at once with this process's imports and hands back one
    pickled value; errors come back as values and are raised here in the
    order the sequential stages raise them. The children run numpy, SciPy
    and shapely (and open3d's PCD reader) only: a fork copies only the
    calling thread, so thread pools started before it (OCC's meshing and
    booleans, OpenMP) hang in a child; the insoles are built here. The work
    is split, not repeated: on a busy machine this takes about as long as
    :func:`_case_here`, on an idle one less.
    """
    # What the children use, imported once here rather than in each child (and again here).
    import scipy.ndimage  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401
    import scipy.sparse.linalg  # noqa: F401
    import scipy.spatial  # noqa: F401

    from orthocad import pipeline

    with contextlib.ExitStack() as children:
        scanning = []
        for declared, path in _given(inputs):
            step("read", None if declared is Side.AUTO else declared)
            child = _Forked(functools.partial(_scan_and_measure, declared, path, inputs, params))
            scanning.append((declared, path, children.enter_context(child)))
        _preload()
        feet, scans, measured = [], [], {}
        for declared, path, child in scanning:
            scanned: _Scanned = child.result()
            if scanned.error is not None:
                raise scanned.error
            for stage, seconds in scanned.clock.items():
                clock[stage] = round(clock.get(stage, 0.0) + seconds, 4)
            feet += scanned.feet
            measured.update(zip(map(id, scanned.feet), scanned.measured, strict=True))
            scans.append((_label(declared), path, scanned.sha256))
    feet = _sides_checked(feet)
    step("measure", None)
    clock["measure"] = round(sum(measured[id(foot)][1] for foot in feet), 4)
    for foot in feet:
        if isinstance(measured[id(foot)][0], Exception):
            raise measured[id(foot)][0]
    gated = pipeline.quality_gate([measured[id(foot)][0] for foot in feet], force=inputs.force,
                                  name=case_id)
    return *_designed_and_written(feet, gated, inputs, params, case_id, out, step, clock), scans


@dataclasses.dataclass(frozen=True, eq=False)
class _Scanned:
    """One scan's feet, its SHA-256 and stage times, each foot's (measurements or error,
    seconds); or the error reading or framing it raised."""

    feet: list[Foot] = dataclasses.field(default_factory=list)
    sha256: str = ""
    measured: list[tuple[Measurements | Exception, float]] = dataclasses.field(
        default_factory=list)
    clock: dict[str, float] = dataclasses.field(default_factory=dict)
    error: Exception | None = None


def _scan_and_measure(declared: Side, path: Path, inputs: CaseInputs, params: Params
                      ) -> _Scanned:
    from orthocad import pipeline
    from orthocad.measure import measure

    clock: dict[str, float] = {}
    try:
        feet, sha256 = _scan_feet(declared, path, inputs, lambda stage, side: None, clock)
    except Exception as error:
        return _Scanned(error=_portable(error))
    measured = []
    for foot in feet:
        started = time.perf_counter()
        try:
            value = measure(foot, loading=inputs.loading,
                            params=pipeline.params_for(foot.side, params, inputs.overrides))
        except Exception as error:
            value = _portable(error)
        measured.append((value, time.perf_counter() - started))
    return _Scanned(feet, sha256, measured, clock)


def _portable(error: Exception) -> Exception:
    """``error`` with its traceback as a note, or, if it would not survive pickling, a
    RuntimeError saying what it was."""
    import pickle
    import traceback

    error.add_note("".join(traceback.format_exception(error)))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        plain = RuntimeError(f"{type(error).__name__}: {error}")
        plain.__notes__ = list(error.__notes__)
        return plain
    return error


def _preload() -> None:
    """Import what this process needs next while the children work (it would wait anyway):
    the build's, the validation's and the report's libraries."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import scipy.interpolate  # noqa: F401
    import trimesh  # noqa: F401

    from orthocad._native import cadquery

    cadquery()


class _Forked:
    """``function()`` run in a forked copy of this process; :meth:`result` waits for its value.

    The copy starts at once and shares this process's imports and data; the
    value comes back pickled. ``function`` returns errors as values; one
    escaping it, or the child dying, is a RuntimeError here. Leaving the
    context stops the child if it is still running.
    """

    def __init__(self, function: Callable[[], Any]) -> None:
        self._function = function

    def __enter__(self) -> _Forked:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._reader, writer = context.Pipe(duplex=False)
        self._process = context.Process(target=_child, args=(self._function, writer),
                                        name="orthocad-fork", daemon=True)
        self._process.start()
        writer.close()  # the child's end: when the child is gone, reading here ends (EOF)
        return self

    def result(self) -> Any:
        import pickle

        try:
            data = self._reader.recv_bytes()
        except EOFError:
            self._process.join()
            raise RuntimeError(f"a forked orthocad process stopped (exit code "
                               f"{self._process.exitcode}) before it was done") from None
        return pickle.loads(data)

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()
        self._process.terminate()  # a finished child is gone already; an unfinished one stops
        self._process.join()


def _child(function: Callable[[], Any], writer: Any) -> None:
    """A forked child's life: compute ``function()``, hand it back pickled."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's, which stops us
    # Another thread (the progress display) may have held the inherited streams' locks at the
    # fork: new stream objects have their own.
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            setattr(sys, name, open(os.dup(fd), "w", buffering=1, errors="backslashreplace"))
        except OSError:
            setattr(sys, name, open(os.devnull, "w"))
    writer.send_bytes(pickle.dumps(function(), protocol=pickle.HIGHEST_PROTOCOL))
