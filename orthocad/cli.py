"""The ``orthocad`` command line: a thin layer over the library.

Only this module prints or exits. Library errors (:class:`OrthocadError`)
become one line on stderr and the exit code documented below; anything else
is a bug (exit 1, traceback with ``--debug``). Heavy packages are imported
inside the commands, so ``orthocad --help`` is instant.
"""

from __future__ import annotations

import atexit
import gc
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from orthocad import __version__
from orthocad.enums import LldKind, Loading, OutputFrame, Side, Units
from orthocad.errors import ExitCode, OrthocadError

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: rerun with --debug and report it); "
    "2 bad input or usage (file, units, parameters, manifest); "
    "3 processed but rejected or partly failed (scan quality, validation, batch)."
)

app = typer.Typer(
    name="orthocad",
    help=f"From a 3D foot scan to a printable, corrective insole.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ScanArg = Annotated[
    Path, typer.Argument(help="Foot scan: .ply .pcd .xyz .csv .txt .obj .stl .npy .npz")
]
SideOpt = Annotated[Side, typer.Option("--side", help="Which foot; auto detects it.")]
UnitsOpt = Annotated[
    Units, typer.Option("--units", help="Units of the scan file; auto detects them.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
LoadingOpt = Annotated[
    Loading, typer.Option("--loading", help="How the foot was loaded when scanned.")
]
ParamsOpt = Annotated[
    Path | None,
    typer.Option("--params", help="Parameter file (TOML); see `orthocad params --dump`."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override [left.|right.]key=value (a parameter or a prescription field)."
    ),
]
LldMmOpt = Annotated[
    float, typer.Option("--lld-mm", min=0, help="Leg-length discrepancy (mm).")
]
ShortSideOpt = Annotated[
    Side | None, typer.Option("--short-side", help="Which leg is short (left or right).")
]
LldKindOpt = Annotated[
    LldKind, typer.Option("--lld-kind", help="Structural (lift) or functional (treat the cause).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Process a scan that fails the quality gate (marked).")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orthocad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """From a 3D foot scan to a printable, corrective insole."""


@app.command()
def info(
    scan: ScanArg, side: SideOpt = Side.AUTO, units: UnitsOpt = Units.AUTO, as_json: JsonOpt = False
):
    """What ingest and framing found: points kept and dropped, units, floor, side, kind, length."""
    from orthocad.pipeline import load_feet

    feet = load_feet(scan, units=units, side=side)
    rows = [_info_row(foot) for foot in feet]
    if as_json:
        _print_json(rows[0] if len(rows) == 1 else {"feet": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scan.name}")
    table.add_column("")
    for row in rows:
        table.add_column(row["side"])
    for key in rows[0]:
        table.add_row(key, *(_fmt(row[key]) for row in rows))
    Console().print(table)


def _info_row(foot) -> dict:
    return {
        "side": foot.side.value,
        "side_detected": foot.side_detected,
        "scan_kind": foot.scan_kind.value,
        "units": foot.scan.units.value,
        "units_detected": foot.scan.units_detected,
        "points": int(len(foot.points_mm)),
        "points_dropped": dict(foot.scan.dropped),
        "floor_found": foot.support_from_floor,
        "support_residual_mm": round(float(foot.support_residual_mm), 3),
        "foot_length_mm": round(foot.length_mm, 2),
        "source": str(foot.scan.source) if foot.scan.source else None,
        "sha256": foot.scan.sha256,
    }


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for the PLY scans and truth JSON.")],
    n: Annotated[int, typer.Option("--n", min=1, max=10_000, help="How many feet.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same feet).")] = 1,
    pair: Annotated[
        bool, typer.Option("--pair", help="Each foot as a left and a right scan of one person.")
    ] = False,
):
    """Write synthetic feet (PLY) with their exact measurements (truth JSON)."""
    from orthocad.synthetic import write_synthetic

    for path in write_synthetic(out, n=n, seed=seed, pair=pair):
        typer.echo(str(path))


def _measurements(scan, side, units, loading, params_file, sets, force):
    """Read and measure a scan file with the CLI's parameter options."""
    from orthocad import params as params_module
    from orthocad import pipeline
    from orthocad import scan as scan_module
    from orthocad.prescribe import parse_overrides

    overrides = parse_overrides(sets or [])
    params = params_module.load(params_file) if params_file else None
    raw = scan_module.read(scan, units=units)
    results = pipeline.measure_scan(
        raw, side=side, loading=loading, params=params, overrides=overrides, force=force
    )
    return results, params, overrides


@app.command()
def measure(
    scan: ScanArg,
    side: SideOpt = Side.AUTO,
    units: UnitsOpt = Units.AUTO,
    loading: LoadingOpt = Loading.WEIGHT_BEARING,
    params: ParamsOpt = None,
    sets: SetOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print one CSV row per foot.")] = False,
):
    """Measure the foot by the spec's definitions, classify it and check the scan's quality."""
    from orthocad.measure import EXTRA_FIELDS, SPEC_FIELDS
    from orthocad.norms import normal_ranges

    results, used, _ = _measurements(scan, side, units, loading, params, sets, force)
    if as_json:
        dicts = [r.to_dict() for r in results]
        _print_json(dicts[0] if len(dicts) == 1 else {"feet": dicts})
        return
    if as_csv:
        import csv

        rows = [r.to_row() for r in results]
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scan.name}: measurements")
    table.add_column("measurement")
    for r in results:
        table.add_column(r.side.value, justify="right")
    table.add_column("normal range")
    ranges = normal_ranges(used or params_defaults())
    for name in SPEC_FIELDS + EXTRA_FIELDS:
        table.add_row(name, *(_fmt_value(getattr(r, name)) for r in results), ranges.get(name, ""))
    for key in ("arch", "rearfoot"):
        table.add_row(f"{key} class", *(_fmt(getattr(r.classification, key)) for r in results), "")
    table.add_row("quality", *("pass" if r.quality.passed else "FORCED" for r in results), "")
    Console().print(table)
    for r in results:
        c = r.classification
        typer.echo(
            f"{r.side.value}: arch {_fmt(c.arch)} ({c.arch_reason}); "
            f"rearfoot {_fmt(c.rearfoot)} ({c.rearfoot_reason})"
        )
        if c.arch_conflict:
            typer.echo(f"{r.side.value}: {c.arch_conflict}")
        for name, reason in r.missing.items():
            typer.echo(f"{r.side.value}: {name} missing: {reason}")


@app.command()
def prescribe(
    scan: ScanArg,
    side: SideOpt = Side.AUTO,
    units: UnitsOpt = Units.AUTO,
    loading: LoadingOpt = Loading.WEIGHT_BEARING,
    params: ParamsOpt = None,
    sets: SetOpt = None,
    lld_mm: LldMmOpt = 0.0,
    short_side: ShortSideOpt = None,
    lld_kind: LldKindOpt = LldKind.STRUCTURAL,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Prescribe each foot's device: every decision with its rule, inputs and source."""
    from orthocad import prescribe as rx

    results, p, overrides = _measurements(scan, side, units, loading, params, sets, force)
    short = None if short_side in (None, Side.AUTO) else short_side
    devices = [
        rx.prescribe(
            m, lld_mm=lld_mm, short_side=short, lld_kind=lld_kind, params=p, overrides=overrides
        )
        for m in results
    ]
    if as_json:
        dicts = [d.to_dict() for d in devices]
        _print_json(dicts[0] if len(dicts) == 1 else {"feet": dicts})
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for device in devices:
        table = Table(title=f"{scan.name}: {device.side.value} device")
        for column in ("field", "value", "rule", "reason", "source"):
            table.add_column(column)
        for d in device.decisions:
            by = " (clinician)" if d.by == "clinician" else ""
            table.add_row(d.field, _fmt(d.value), d.rule + by, d.reason, d.source or "-")
        console.print(table)
        for warning in device.warnings:
            console.print(f"[bold yellow]warning[/]: {warning}")


@app.command()
def sweep(
    scans: Annotated[list[Path], typer.Argument(help="One or more foot scans.")],
    vary: Annotated[
        list[str],
        typer.Option("--vary", help="GROUP.FIELD=v1,v2,... (repeatable: the cartesian product)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for sweep.csv and the plots.")],
    side: SideOpt = Side.AUTO,
    units: UnitsOpt = Units.AUTO,
    loading: LoadingOpt = Loading.WEIGHT_BEARING,
    params: ParamsOpt = None,
    sets: SetOpt = None,
    lld_mm: LldMmOpt = 0.0,
    short_side: ShortSideOpt = None,
    lld_kind: LldKindOpt = LldKind.STRUCTURAL,
    geometry: Annotated[
        bool,
        typer.Option("--geometry", help="Also build each insole (~0.5 s each): height, volume."),
    ] = False,
    force: ForceOpt = False,
):
    """Vary rule parameters over scans: a CSV row per foot and variant, a plot per parameter."""
    from orthocad import params as params_module
    from orthocad import sweep as sweep_module
    from orthocad.prescribe import parse_overrides

    grid = sweep_module.parse_vary(vary, geometry=geometry)
    overrides = parse_overrides(sets or [])
    base = params_module.load(params) if params else None
    sweep_module.check_variants(grid, params=base, overrides=overrides)
    feet = sweep_module.load_feet(
        scans, units=units, side=side, loading=loading, params=base, overrides=overrides,
        force=force,
    )
    rows = sweep_module.run_sweep(
        feet, grid, params=base, overrides=overrides, lld_mm=lld_mm,
        short_side=None if short_side in (None, Side.AUTO) else short_side, lld_kind=lld_kind,
        geometry=geometry,
    )
    written = sweep_module.write_sweep(rows, grid, out)
    typer.echo(f"{written['csv']}: {len(rows)} rows ({len(feet)} "
               f"{'foot' if len(feet) == 1 else 'feet'} × {len(rows) // len(feet)} variants)")
    for key in grid:
        moved = sweep_module.moved_fields(rows, grid, key)
        typer.echo(f"{written[key]}: {key} moved {', '.join(moved) if moved else 'nothing'}")


@app.command("params")
def params_command(
    dump: Annotated[
        bool, typer.Option("--dump", help="Print the default parameter file (TOML).")
    ] = False,
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON schema.")] = False,
    check: Annotated[
        Path | None, typer.Option("--check", help="Validate a parameter file.")
    ] = None,
):
    """The parameter file: dump the defaults, print the schema, or check a file."""
    from orthocad import params as params_module

    if dump:
        sys.stdout.write(params_module.dump_toml())
    elif schema:
        _print_json(params_module.schema())
    elif check:
        params_module.load(check)
        typer.echo(f"{check}: valid")
    else:
        raise typer.BadParameter("give --dump, --schema or --check FILE")


@app.command("plate")
def plate_command(
    folder: Annotated[
        Path, typer.Argument(help="Finished insoles: <case>_left.stl, <case>_right.stl, any depth.")
    ],
    bed: Annotated[str, typer.Option("--bed", help="Printer bed WIDTHxDEPTH in mm, e.g. 380x284.")],
    gap: Annotated[
        float, typer.Option("--gap", min=0, help="Space between parts and to the bed's edge, mm.")
    ] = 4.0,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for plate_NN.3mf and plates.csv.")
    ] = Path("plates"),
):
    """Nest finished insoles onto as few build plates as possible: a 3MF per plate and a CSV."""
    from orthocad import plate as plate_module

    done = plate_module.plate_folder(
        folder, bed_mm=plate_module.parse_bed(bed), gap_mm=gap, out=out
    )
    packing = done.packing
    for plate, path in zip(packing.plates, done.plates, strict=True):
        names = ", ".join(p.part.name for p in plate.placements)
        typer.echo(f"{path}: {len(plate.placements)} parts, {plate.fill:.0%} of the bed: {names}")
    placed = sum(len(plate.placements) for plate in packing.plates)
    typer.echo(f"{placed} parts on {len(packing.plates)} plates (at least {packing.area_bound} "
               f"by area); list: {done.csv}")
    for case_id, reason in packing.split:
        typer.echo(f"{case_id}: left and right on different plates: {reason}")
    for miss in packing.unplaced:
        typer.echo(f"orthocad: {miss.part.name} not placed: {miss.reason}", err=True)
    if packing.unplaced:
        raise typer.Exit(ExitCode.REJECTED)


@app.command()
def signoff(
    out_dir: Annotated[Path, typer.Argument(help="A case's output folder (--out of run).")],
    by: Annotated[
        str | None, typer.Option("--by", help="Who approves the files (the clinician).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note kept with it.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Verify the files against the sign-off (3: changed).")
    ] = False,
):
    """Sign off a case's output files (who approved which), or check them against it."""
    from orthocad import signoff as signoff_module
    from orthocad.errors import RejectedError

    if check == (by is not None) or (check and note is not None):
        raise typer.BadParameter("give --by NAME [--note TEXT] to sign off, or --check alone")
    if check:
        result = signoff_module.check(out_dir)
        record = result.signoff
        if not result.ok:
            raise RejectedError(
                f"{out_dir}: the files differ from what {record.by} signed off at "
                f"{record.time_utc}: {'; '.join(result.problems())}; review the case and "
                "sign it off again"
            )
        typer.echo(f"{out_dir}: all {len(record.files)} files as {record.by} signed them off "
                   f"at {record.time_utc}")
        return
    path = signoff_module.sign(out_dir, by=by, note=note)
    typer.echo(f"{path}: {len(signoff_module.read(out_dir).files)} files signed off")


@app.command()
def insole(
    scan: ScanArg,
    out: Annotated[Path, typer.Option("--out", help="Folder for the insole files.")],
    side: SideOpt = Side.AUTO,
    units: UnitsOpt = Units.AUTO,
    loading: LoadingOpt = Loading.WEIGHT_BEARING,
    params: ParamsOpt = None,
    sets: SetOpt = None,
    lld_mm: LldMmOpt = 0.0,
    short_side: ShortSideOpt = None,
    lld_kind: LldKindOpt = LldKind.STRUCTURAL,
    output_frame: Annotated[
        OutputFrame,
        typer.Option("--frame", help="canonical: ready to print; scan: the scan's coordinates."),
    ] = OutputFrame.CANONICAL,
    case_id: Annotated[
        str | None,
        typer.Option("--case-id", help="Case id for the files' metadata and engraving "
                     "(default: case- and the scan's SHA-256 prefix)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Process a scan failing the quality gate and write insoles "
                     "failing validation (marked; exit 3 still reports the failure)."),
    ] = False,
):
    """Build each foot's insole: validated STL, STEP and 3MF, prescription and validation JSON."""
    from orthocad import params as params_module
    from orthocad.errors import RejectedError
    from orthocad.pipeline import make_insoles
    from orthocad.prescribe import parse_overrides

    results = make_insoles(
        scan, out, side=side, units=units, loading=loading,
        params=params_module.load(params) if params else None,
        overrides=parse_overrides(sets or []), lld_mm=lld_mm, short_side=short_side,
        lld_kind=lld_kind, output_frame=output_frame, force=force, case_id=case_id,
    )
    for result in results:
        for path in result.paths:
            typer.echo(str(path))
        v = result.validation
        typer.echo(f"{result.foot.side.value}: validation "
                   f"{'passed' if v.passed else 'FAILED, forced'} ({len(v.checks)} checks)")
    forced = [r for r in results if not r.validation.passed]
    if forced:  # written, marked; the exit code still reports the failure
        raise RejectedError("; ".join(
            f"{scan.name} ({r.foot.side.value} foot): the insole fails validation: "
            f"{r.validation.reasons()}; written anyway, marked (--force)" for r in forced))

@app.command()
def run(
    scan: Annotated[
        Path | None, typer.Argument(help="A scan whose side(s) are detected (one foot or both).")
    ] = None,
    left: Annotated[Path | None, typer.Option("--left", help="Scan of the left foot.")] = None,
    right: Annotated[Path | None, typer.Option("--right", help="Scan of the right foot.")] = None,
    case_id: Annotated[
        str | None,
        typer.Option("--case-id", help="Opaque case id (never a patient name); "
                     "default: case- and the first scan's SHA-256 prefix."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Case folder (default: outputs/CASE_ID).")
    ] = None,
    units: UnitsOpt = Units.AUTO,
    loading: LoadingOpt = Loading.WEIGHT_BEARING,
    params: ParamsOpt = None,
    sets: SetOpt = None,
    lld_mm: LldMmOpt = 0.0,
    short_side: ShortSideOpt = None,
    lld_kind: LldKindOpt = LldKind.STRUCTURAL,
    output_frame: Annotated[
        OutputFrame,
        typer.Option("--frame", help="canonical: ready to print; scan: the scan's coordinates."),
    ] = OutputFrame.CANONICAL,
    trust_sides: Annotated[
        bool, typer.Option("--trust-sides", help="Take --left/--right as given, even when a "
                           "scan looks like the other foot.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Write devices whose scan or insole fails a check "
                           "(marked).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage.")] = False,
):
    """Scans to a validated pair of insoles, with the report to check and sign off."""
    from orthocad import run as run_module
    from orthocad.prescribe import parse_overrides

    inputs = run_module.CaseInputs(
        case_id=case_id or _default_case_id(scan or left or right),
        left=left, right=right, scan=scan, lld_mm=lld_mm,
        short_side=None if short_side in (None, Side.AUTO) else short_side, lld_kind=lld_kind,
        loading=loading, units=units, params_file=params,
        overrides=parse_overrides(sets or []), trust_sides=trust_sides, force=force,
        output_frame=output_frame,
    )
    target = out or Path("outputs") / inputs.case_id
    with _progress(quiet=quiet, verbose=verbose) as progress:
        result = run_module.run_case(inputs, target, progress=progress, parallel=True)
    for foot in result.feet:
        m, rx = foot.measurements, foot.prescription
        c = m.classification
        typer.echo(
            f"{foot.foot.side.value}: foot {m.foot_length_mm:.1f} mm, arch {_fmt(c.arch)}, "
            f"rearfoot {_fmt(c.rearfoot)} -> {rx.device_length.value} device, rearfoot post "
            f"{rx.rearfoot_post_deg:+.1f} deg, heel lift {rx.heel_lift_mm:.1f} mm; validation "
            f"{'passed' if foot.validation.passed else 'FAILED (forced)'}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"report: {result.report}")
    if verbose:
        for stage, seconds in result.timings_s.items():
            typer.echo(f"  {stage:<24} {seconds:7.3f} s", err=True)


@app.command("batch")
def batch_command(
    manifest: Annotated[
        Path, typer.Argument(help="Manifest CSV: case_id, left_scan, right_scan and optional "
                             "lld_mm, short_side, params, overrides, notes.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the case folders, summary.csv and index.html.")
    ],
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Local worker processes, one thread "
                                 "each (default: one per core).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="A running Dask cluster, tcp://HOST:8786 "
                                 "(scans and --out on storage every worker sees).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo cases already done with the same inputs.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
):
    """Run every case of a manifest on Dask: one bad case never stops the others; resumable."""
    from orthocad import batch as batch_module
    from orthocad.enums import CaseStatus

    with _batch_progress(quiet=quiet) as progress:
        result = batch_module.run_batch(manifest, out, workers=workers, scheduler=scheduler,
                                        force=force, progress=progress)
    typer.echo(f"{len(result.outcomes)} cases: {result.count(CaseStatus.OK)} ok, "
               f"{result.count(CaseStatus.SKIPPED)} skipped (done before), "
               f"{len(result.failed)} failed; summary: {result.summary}; index: {result.index}")
    for outcome in result.failed:
        typer.echo(f"orthocad: {outcome.case_id} failed: {outcome.error}", err=True)
    if result.failed:
        raise typer.Exit(result.exit_code)


def _default_case_id(path: Path | None) -> str:
    """The case id of a scan given without one (:func:`orthocad.pipeline.default_case_id`)."""
    import hashlib

    from orthocad.pipeline import default_case_id

    if path is None:
        from orthocad.errors import InputError

        raise InputError("no scan given: pass --left and/or --right, or one SCAN")
    try:
        with open(path, "rb") as fh:
            return default_case_id(hashlib.file_digest(fh, "sha256").hexdigest())
    except OSError as error:
        from orthocad.errors import ScanReadError

        raise ScanReadError(f"{path}: cannot read it ({error.strerror}); check the path") from None


class _progress:
    """Rich progress per stage on a terminal; nothing when piped or ``--quiet``; logs with -v."""

    def __init__(self, *, quiet: bool, verbose: bool) -> None:
        self.live = None if quiet or not sys.stderr.isatty() else True
        self.verbose = verbose
        self.status = None

    def __enter__(self):
        if self.live:
            from rich.console import Console

            self.status = Console(stderr=True).status("starting")
            self.status.__enter__()
        return self

    def __call__(self, stage: str, side) -> None:
        text = stage if side is None else f"{side.value}: {stage}"
        if self.status is not None:
            self.status.update(text)
        if self.verbose:
            typer.echo(f"orthocad: {text}", err=True)

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)


class _batch_progress:
    """A live bar of a batch's cases on a terminal (stderr); nothing when piped or ``--quiet``."""

    def __init__(self, *, quiet: bool) -> None:
        self.live = not quiet and sys.stderr.isatty()
        self.bar = None
        self.task = None
        self.started = 0.0

    def __enter__(self):
        if self.live:
            import time

            from rich import progress as bars
            from rich.console import Console

            self.bar = bars.Progress(
                bars.TextColumn("cases"), bars.BarColumn(), bars.MofNCompleteColumn(),
                bars.TextColumn("{task.fields[detail]}"), bars.TimeElapsedColumn(),
                console=Console(stderr=True))
            self.bar.__enter__()
            self.task = self.bar.add_task("cases", total=None, detail="starting the workers")
            self.started = time.monotonic()
        return self

    def __call__(self, tally, outcome) -> None:
        if self.bar is None:
            return
        import time

        # rate and ETA from the cases run now: skipped ones take no time
        run = tally.ok + tally.failed
        minutes = (time.monotonic() - self.started) / 60.0
        rate = run / minutes if run and minutes > 0 else None
        eta = f", ETA {tally.remaining / rate:.1f} min" if rate and tally.remaining else ""
        speed = f", {rate:.1f} cases/min{eta}" if rate else ""
        self.bar.update(self.task, total=tally.total, completed=tally.done, detail=(
            f"{tally.ok} ok, {tally.skipped} skipped, {tally.failed} failed, "
            f"{tally.remaining} left{speed}"))

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def params_defaults():
    from orthocad import params as params_module

    return params_module.defaults()


def _fmt_value(value) -> str:
    return "-" if value is None else f"{value:.3f}" if abs(value) < 2 else f"{value:.1f}"


def _fmt(value) -> str:
    if hasattr(value, "value"):
        return str(value.value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    if argv is None:  # a process of its own: its exit need not collect what it imported
        atexit.register(gc.freeze)  # the last collection walks CadQuery's objects: 0.7 s
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # click returns a command's typer.Exit code instead of raising it when not standalone
        code = app(args=args, prog_name="orthocad", standalone_mode=False)
    except typer.Exit as stop:
        return stop.exit_code
    except TyperException as bad_usage:  # click's usage errors, as vendored by typer
        bad_usage.show()
        return ExitCode.BAD_INPUT
    except typer.Abort:
        typer.echo("orthocad: interrupted", err=True)
        return ExitCode.INTERNAL
    except OrthocadError as error:
        if debug:
            traceback.print_exc()
        typer.echo(f"orthocad: error: {error}", err=True)
        return error.exit_code
    except Exception as bug:  # anything else is a bug in orthocad
        if debug:
            traceback.print_exc()
        typer.echo(
            f"orthocad: internal error: {type(bug).__name__}: {bug} "
            "(rerun with --debug and report it)",
            err=True,
        )
        return ExitCode.INTERNAL
    return code if isinstance(code, int) else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
