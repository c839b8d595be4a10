"""Parameter sweeps: how the prescription (and, optionally, the insole) moves with the rules.

An engineer tuning the rules varies parameters over lists of values
(``--vary rearfoot_post.gain=0.5,1,1.5``); the sweep runs their cartesian
product on every foot of every scan and writes one CSV row per (scan, foot,
variant) with the varied values and the resulting prescription, plus one PNG
per varied parameter showing the prescription fields it moved.

Each scan is measured once. A variant only re-classifies the foot with its
own thresholds and prescribes (a fraction of a millisecond); with
``geometry`` it also builds the insole (≈ 0.5 s a build, one per distinct
prescription) and records its max height, volume and min thickness.

The quality gate judges scans, not prescriptions, so ``quality.*`` cannot be
varied here (vary it with ``orthocad measure --set``); ``insole.*`` changes
only the geometry, so it needs ``geometry``. Every variant is validated
(bounds, and the relations between parameters) before any scan is read, and
the outputs are written only once everything is computed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orthocad import params as params_module
from orthocad.enums import Loading, Side, Units
from orthocad.errors import OrthocadError, ParameterError
from orthocad.prescribe import LldKind, Overrides, prescribe

if TYPE_CHECKING:
    from orthocad.frame import Foot
    from orthocad.measure import Measurements
    from orthocad.params import Params

CSV_NAME = "sweep.csv"
MAX_VARIANTS = 100_000  #: a product beyond this is a typo, not a study
#: Insole figures recorded with ``geometry`` (column → Insole attribute).
GEOMETRY = {"insole_max_height_mm": "max_height_mm", "insole_volume_mm3": "volume_mm3",
            "insole_min_thickness_mm": "min_thickness_mm"}
#: Columns that identify a row or echo the clinician's inputs: never plotted.
_NOT_PLOTTED = ("scan", "side", "foot", "variant", "warnings", "lld_mm", "lld_short_side",
                "lld_kind", "insole_error")
#: Category order on a plot's axis, where the values have one.
_ORDERS = {
    "device_length": ("three_quarter", "sulcus", "full"),
    "lift_extent": ("none", "heel", "full"),
    "arch": ("low", "normal", "high"),
    "rearfoot": ("supinated", "neutral", "pronated"),
}

_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

Grid = dict[str, tuple[Any, ...]]  #: parameter key → its values, in the order given


@dataclass(frozen=True, eq=False)
class SweepFoot:
    """One foot of a scanned file, framed and measured once for the whole sweep."""

    scan: str  #: the scan's file name
    foot: Foot
    measurements: Measurements


def parse_vary(items: Iterable[str], *, geometry: bool = False, where: str = "--vary") -> Grid:
    """Parse ``GROUP.FIELD=v1,v2,...`` items into a grid; check the keys (the values are
    checked against their parameters by :func:`check_variants`)."""
    grid: Grid = {}
    known = params_module.keys()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise ParameterError(f"{where}: {item!r} is not GROUP.FIELD=v1,v2,...; write e.g. "
                                 "rearfoot_post.gain=0.5,1,1.5")
        if key not in known:
            raise ParameterError(f"{where}: unknown parameter {key!r}; a sweep varies a "
                                 f"parameter GROUP.FIELD, one of: {', '.join(known)}")
        group = key.partition(".")[0]
        if group == "quality":
            raise ParameterError(f"{where}: {key} gates the scan and does not change a "
                                 "prescription; vary it with `orthocad measure --set`")
        if group == "insole" and not geometry:
            raise ParameterError(f"{where}: {key} only changes the insole's geometry; add "
                                 "--geometry to build the insoles")
        if key in grid:
            raise ParameterError(f"{where}: {key} is varied twice; give all its values in one "
                                 f"--vary {key}=v1,v2,...")
        values = tuple(_value(part.strip(), key=key, where=where) for part in text.split(","))
        if len(set(values)) < len(values):
            raise ParameterError(f"{where}: {key} lists a value twice ({text.strip()}); "
                                 "give each value once")
        grid[key] = values
    if not grid:
        raise ParameterError(f"{where}: nothing to vary; give at least one "
                             "--vary GROUP.FIELD=v1,v2,...")
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_VARIANTS:
        raise ParameterError(f"{where}: {count} variants is more than {MAX_VARIANTS}; "
                             "vary fewer parameters or values")
    return grid


def variants(grid: Grid) -> list[dict[str, Any]]:
    """The cartesian product of the grid, the last parameter varying fastest."""
    return [dict(zip(grid, combination, strict=True))
            for combination in itertools.product(*grid.values())]


def check_variants(grid: Grid, *, params: Params | None = None,
                   overrides: Overrides | None = None, where: str = "--vary") -> None:
    """Refuse the sweep unless every variant is valid on both feet: each value in its
    parameter's bounds, the parameters' relations held, no key both --set and varied."""
    from orthocad.pipeline import params_for

    overrides = overrides or Overrides(params={}, fields={})
    fixed = {key for values in overrides.params.values() for key in values}
    both = sorted(fixed & set(grid))
    if both:
        raise ParameterError(f"{where}: {', '.join(both)} is both --set and varied; "
                             "drop one of them")
    for side in (Side.LEFT, Side.RIGHT):
        base = params_for(side, params, overrides)
        for variant in variants(grid):
            params_module.with_overrides(base, variant, where=where)


def load_feet(paths: Sequence[str | Path], *, units: Units = Units.AUTO,
              side: Side = Side.AUTO, loading: Loading = Loading.WEIGHT_BEARING,
              params: Params | None = None, overrides: Overrides | None = None,
              force: bool = False) -> list[SweepFoot]:
    """Read, frame and measure every foot of every scan once (the quality gate applies)."""
    from orthocad import pipeline, scan

    feet = []
    for path in paths:
        path = Path(path)
        framed = pipeline.frame_feet(pipeline.split_and_clean(scan.read(path, units=units)),
                                     side=side, name=path.name)
        measured = pipeline.measure_feet(framed, loading=loading, params=params,
                                         overrides=overrides, force=force, name=path.name)
        feet += [SweepFoot(path.name, f, m) for f, m in zip(framed, measured, strict=True)]
    return feet


def run_sweep(
    feet: Sequence[SweepFoot],
    grid: Grid,
    *,
    params: Params | None = None,
    overrides: Overrides | None = None,
    lld_mm: float = 0.0,
    short_side: Side | None = None,
    lld_kind: LldKind = LldKind.STRUCTURAL,
    geometry: bool = False,
) -> list[dict[str, Any]]:
    """One row per (foot, variant): the scan's name, the side, the foot's and the variant's
    numbers, the varied values, the prescription and, with ``geometry``, the insole's figures
    (an insole that cannot be built: its error)."""
    from orthocad.measure import EXTRA_FIELDS, SPEC_FIELDS, classify
    from orthocad.pipeline import params_for

    check_variants(grid, params=params, overrides=overrides)
    overrides = overrides or Overrides(params={}, fields={})
    fields_only = Overrides(params={}, fields=overrides.fields)  # parameters go in via p
    builds: dict[tuple, dict[str, Any]] = {}
    rows = []
    for number, sweep_foot in enumerate(feet):
        m = sweep_foot.measurements
        base = params_for(m.side, params, overrides)
        values = {name: getattr(m, name) for name in SPEC_FIELDS + EXTRA_FIELDS}
        plantar = None
        for index, variant in enumerate(variants(grid)):
            p = params_module.with_overrides(base, variant, where="--vary")
            # The thresholds may be what varies: classify again with this variant's.
            reclassified = dataclasses.replace(m, classification=classify(
                values, scan_kind=m.scan_kind, loading=m.loading, params=p))
            rx = prescribe(reclassified, lld_mm=lld_mm, short_side=short_side,
                           lld_kind=lld_kind, params=p, overrides=fields_only)
            row = {"scan": sweep_foot.scan, "side": m.side.value, "foot": number,
                   "variant": index, **variant, **rx.to_row()}
            if geometry:
                if plantar is None:
                    from orthocad import surface

                    plantar = surface.plantar(sweep_foot.foot)
                key = (number, json.dumps(rx.to_row() | {"warnings": ""}, sort_keys=True),
                       p.insole)
                if key not in builds:
                    builds[key] = _geometry(sweep_foot, rx, p, plantar)
                row |= builds[key]
            rows.append(row)
    return rows


def _geometry(sweep_foot: SweepFoot, rx: Any, p: Params, plantar: Any) -> dict[str, Any]:
    from orthocad.insole import build_insole

    try:
        insole = build_insole(sweep_foot.foot, rx, params=p, plantar=plantar,
                              measurements=sweep_foot.measurements)
    except OrthocadError as error:
        return dict.fromkeys(GEOMETRY) | {"insole_error": str(error)}
    return {column: round(float(getattr(insole, attribute)), 3)
            for column, attribute in GEOMETRY.items()} | {"insole_error": ""}


def moved_fields(rows: Sequence[dict[str, Any]], grid: Grid, key: str) -> list[str]:
    """The plotted columns that change with ``key`` while everything else stays put."""
    return [column for column in _plotted(rows, grid)
            if any(len({row[column] for row in group}) > 1
                   for _, group in _groups(rows, grid, key))]


def render_plot(rows: Sequence[dict[str, Any]], grid: Grid, key: str) -> bytes:
    """A PNG: one panel per field ``key`` moved, that field against ``key``'s values, one line
    per foot and combination of the other varied values."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    moved = moved_fields(rows, grid, key)
    groups = _groups(rows, grid, key)
    xs, x_labels = _axis(grid[key])
    figure = Figure(figsize=(7.0, 1.2 + 1.9 * max(len(moved), 1)), layout="constrained")
    axes = figure.subplots(max(len(moved), 1), 1, sharex=True, squeeze=False)[:, 0]
    figure.suptitle(f"{key}: the prescription fields it moves")
    if not moved:
        axes[0].text(0.5, 0.5, f"no prescription field moved over {key} = "
                     f"{', '.join(map(_show, grid[key]))}", ha="center", va="center",
                     transform=axes[0].transAxes)
        axes[0].set_yticks([])
    for ax, column in zip(axes, moved, strict=False):
        codes, y_labels = _codes(column, [row[column] for row in rows])
        for label, group in groups:
            ordered = sorted(group, key=lambda row: grid[key].index(row[key]))
            ys = [codes.get(row[column], math.nan) for row in ordered]
            ax.plot([xs[grid[key].index(row[key])] for row in ordered], ys, marker="o",
                    label=label)
        ax.set_ylabel(column, fontsize=8)
        if y_labels is not None:
            ax.set_yticks(range(len(y_labels)), y_labels, fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(key)
    if x_labels is not None:
        axes[-1].set_xticks(xs, x_labels)
    if moved and len(groups) <= 8:
        figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                      fontsize=7)
    elif moved:
        axes[0].set_title(f"{len(groups)} lines: each foot × the other varied values", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_name(key: str) -> str:
    return f"sweep_{key}.png"


def write_sweep(rows: Sequence[dict[str, Any]], grid: Grid, out_dir: str | Path
                ) -> dict[str, Path]:
    """Write the CSV and one PNG per varied parameter into ``out_dir``; all or nothing.

    Everything is rendered first, then staged in a hidden folder inside
    ``out_dir`` and renamed into place. Returns {name: path} (the CSV under
    ``"csv"``, each plot under its parameter key).
    """
    files = {CSV_NAME: _csv_bytes(rows)} | {
        plot_name(key): render_plot(rows, grid, key) for key in grid}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".sweep-"))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        for name in files:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"csv": out / CSV_NAME} | {key: out / plot_name(key) for key in grid}


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(column for row in rows for column in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _value(text: str, *, key: str, where: str) -> bool | float | str:
    """A number, true/false or a word (a choice); the parameter's type is checked later."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text if _BARE_WORD.fullmatch(text) else None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise ParameterError(f"{where}: {key}={text!r} is not a value; give numbers, true/false or "
                         "words (for a choice) separated by commas")


def _plotted(rows: Sequence[dict[str, Any]], grid: Grid) -> list[str]:
    columns = dict.fromkeys(column for row in rows for column in row)
    return [c for c in columns if c not in _NOT_PLOTTED and c not in grid]


def _groups(rows: Sequence[dict[str, Any]], grid: Grid, key: str
            ) -> list[tuple[str, list[dict[str, Any]]]]:
    """Rows that differ only in ``key`` (same foot, same other varied values), each group
    with a label naming them."""
    others = [k for k in grid if k != key]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["foot"], *(row[k] for k in others)), []).append(row)
    return [(" ".join([group[0]["scan"], group[0]["side"],
                       *(f"{k}={_show(group[0][k])}" for k in others)]), group)
            for group in groups.values()]


def _axis(values: tuple[Any, ...]) -> tuple[list[float], list[str] | None]:
    """x positions of the values, and tick labels for switches and choices."""
    if all(isinstance(v, float) for v in values):
        return list(values), None
    return [float(v) if isinstance(v, bool) else float(i) for i, v in enumerate(values)], [
        _show(v) for v in values]


def _codes(column: str, values: list[Any]) -> tuple[dict[Any, float], list[str] | None]:
    """How a column's values sit on a y axis: numbers as themselves, switches 0/1, categories
    (device length, classes, zones) as their order; and tick labels for the non-numbers."""
    present = list(dict.fromkeys(values))
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool))
           for v in present):
        return {v: math.nan if v is None else float(v) for v in present}, None
    if all(isinstance(v, bool) for v in present):
        return {False: 0.0, True: 1.0}, ["false", "true"]
    order = [v for v in _ORDERS.get(column, ()) if v in present]
    order += [v for v in present if v not in order]
    return {v: float(i) for i, v in enumerate(order)}, [_show(v) for v in order]


def _show(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)
