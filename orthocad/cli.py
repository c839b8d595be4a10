"""The ``orthocad`` command line: a thin layer over the library.

Only this module prints or exits. Library errors (:class:`OrthocadError`)
become one line on stderr and the exit code documented below; anything else
is a bug (exit 1, traceback with ``--debug``). Heavy packages are imported
inside the commands, so ``orthocad --help`` is instant.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import TyperException

from orthocad import __version__
from orthocad.enums import Loading, Side, Units
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
):
    """Write synthetic feet (PLY) with their exact measurements (truth JSON)."""
    from orthocad.synthetic import write_synthetic

    for path in write_synthetic(out, n=n, seed=seed):
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
    lld_mm: Annotated[
        float, typer.Option("--lld-mm", min=0, help="Leg-length discrepancy (mm).")
    ] = 0.0,
    short_side: Annotated[
        Side | None, typer.Option("--short-side", help="Which leg is short (left or right).")
    ] = None,
    lld_kind: Annotated[
        str, typer.Option("--lld-kind", help="structural or functional.")
    ] = "structural",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Prescribe each foot's device: every decision with its rule, inputs and source."""
    from orthocad import prescribe as rx

    results, p, overrides = _measurements(scan, side, units, loading, params, sets, force)
    try:
        kind = rx.LldKind(lld_kind)
    except ValueError:
        raise typer.BadParameter("--lld-kind is structural or functional") from None
    short = None if short_side in (None, Side.AUTO) else short_side
    devices = [
        rx.prescribe(
            m, lld_mm=lld_mm, short_side=short, lld_kind=kind, params=p, overrides=overrides
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
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, prog_name="orthocad", standalone_mode=False)
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
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
