"""The case report: one offline HTML page an orthotist checks before signing off.

:func:`write_report` writes into the case's folder:

* ``report.html``: the case header (warnings first, then the scans and their
  quality verdicts), the measurements beside their normal ranges with the
  classification and the index that drove it, every prescription decision
  with its reason and source (clinician overrides marked), the plots, an
  interactive 3D view of each scan with its insole, and the output files with
  their sizes, SHA-256 and validation results;
* ``report_assets/``: the plots (PNG), the style sheet, the 3D viewer (our own
  WebGL code, ``orthocad/data/report_viewer.js``) and one ``scene_<side>.js``
  per foot holding its meshes;
* ``summary.png``: a one-page A4 summary for the patient file.

The page works offline from ``file://``: nothing is fetched from a network
(its Content-Security-Policy allows the page's own files only), and the
meshes are scripts, not data files, because a page opened from ``file://``
may not read its own files. Each mesh is decimated for the view
(at most :data:`VIEW_FACES` triangles; a point cloud to :data:`VIEW_POINTS`
points) and stored as base64 uint16: positions quantised over the mesh's box
(≤ 0.005 mm steps on a foot), triangle indices.

Privacy: the report names the case by its id only. Scans are identified by
their SHA-256, never by file name, which may carry a patient's name.

Every text is HTML-escaped. Writing is atomic for a caller: the page, its
assets and the summary are made in a temporary folder inside ``out_dir`` and
moved into place at the end, so a failure leaves no partial report.

The report draws what the stages computed and computes no measurement: the
heel slices' centres it draws are the raw points' extremes, for orientation,
while the line through them is at the measured rearfoot angle.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orthocad import __version__
from orthocad.enums import Side
from orthocad.errors import InputError
from orthocad.measure import EXTRA_FIELDS, HEEL_SLICES_MM, SPEC_FIELDS
from orthocad.signoff import file_sha256

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from orthocad.frame import Foot
    from orthocad.insole import Insole
    from orthocad.measure import Measurements
    from orthocad.params import Params
    from orthocad.prescribe import Prescription
    from orthocad.surface import Plantar

REPORT_NAME = "report.html"
ASSETS_DIR = "report_assets"
SUMMARY_NAME = "summary.png"
VIEW_FACES = 40_000  #: most triangles a mesh keeps in the 3D view
VIEW_POINTS = 40_000  #: most points a point-cloud scan keeps in the 3D view

_DPI = 110
_PROFILE_INSET_MM = 8.0  # the medial arch profile runs this far inside the foot's medial edge
_SCAN_COLOR = (0.86, 0.62, 0.50)
_INSOLE_COLOR = (0.22, 0.48, 0.85)
_LABELS = {
    "foot_length_mm": "Foot length",
    "ball_width_mm": "Ball width",
    "heel_width_mm": "Heel width",
    "truncated_length_mm": "Truncated foot length (MTH1)",
    "fifth_met_x_mm": "Fifth metatarsal head (x)",
    "dorsal_height_mm": "Dorsal height at 50 % FL",
    "arch_height_index": "Arch height index",
    "medial_arch_height_mm": "Medial arch height",
    "arch_index": "Arch index",
    "rearfoot_angle_deg": "Rearfoot angle (eversion +)",
    "chippaux_smirak_index": "Chippaux-Smirak index",
    "staheli_index": "Staheli index",
    "clarke_angle_deg": "Clarke angle",
}
#: The normal range of these is a classification threshold: its source is the parameter's.
_RANGE_PARAMS = {
    "arch_index": "classification.arch_index_low",
    "arch_height_index": "classification.ahi_low",
    "rearfoot_angle_deg": "classification.pronated_deg",
}


@dataclass(frozen=True, eq=False)
class FootReport:
    """Everything the report shows of one foot (all in the stages' own types)."""

    foot: Foot
    plantar: Plantar
    measurements: Measurements
    prescription: Prescription
    insole: Insole
    #: ``export.validate(...).to_dict()``: ``passed``, optional ``forced``, ``checks`` as a
    #: list of {name, passed, value, limit, unit, message} or a mapping name -> the rest, and
    #: optional ``skipped`` (name -> why)
    validation: Mapping[str, Any] | None = None
    files: tuple[Path, ...] = ()  #: this foot's output files, listed with size and SHA-256

    def __post_init__(self) -> None:
        sides = {self.foot.side, self.measurements.side, self.prescription.side, self.insole.side}
        if len(sides) != 1:
            raise InputError(
                "the foot, measurements, prescription and insole of a report are of different "
                f"sides ({', '.join(sorted(s.value for s in sides))}): pass one foot's results")

    @property
    def side(self) -> Side:
        return self.foot.side


@dataclass(frozen=True, eq=False)
class CaseReport:
    """A case: its id, one or two feet (left first), case-level warnings and files."""

    case_id: str
    feet: tuple[FootReport, ...]
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    warnings: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()  #: case-level output files (case.json …)
    params: Params | None = None  #: the parameters used (normal ranges); None: the defaults

    def __post_init__(self) -> None:
        feet = tuple(sorted(self.feet, key=lambda f: f.side is not Side.LEFT))
        if not feet or len({f.side for f in feet}) != len(feet):
            raise InputError("a case report needs one foot, or a left and a right foot")
        object.__setattr__(self, "feet", feet)


def write_report(case: CaseReport, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.html``, ``report_assets/`` and ``summary.png`` into ``out_dir``.

    Returns the path of ``report.html``. An existing report there is replaced.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        assets = work / ASSETS_DIR
        assets.mkdir()
        data = resources.files("orthocad").joinpath("data")
        (assets / "viewer.js").write_bytes(data.joinpath("report_viewer.js").read_bytes())
        (assets / "report.css").write_bytes(data.joinpath("report.css").read_bytes())
        plots = _write_plots(case, assets)
        for fr in case.feet:
            (assets / f"scene_{fr.side.value}.js").write_text(_scene_script(fr), "utf-8")
        _write_summary(case, work / SUMMARY_NAME)
        (work / REPORT_NAME).write_text(_page(case, out, plots), "utf-8")
        _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / REPORT_NAME


def _move_into_place(work: Path, out: Path) -> None:
    """Assets first, then the summary, the page last: the page never links missing assets."""
    target = out / ASSETS_DIR
    if target.exists():
        old = work / "old-assets"
        os.replace(target, old)
    os.replace(work / ASSETS_DIR, target)
    os.replace(work / SUMMARY_NAME, out / SUMMARY_NAME)
    os.replace(work / REPORT_NAME, out / REPORT_NAME)


# --- warnings --------------------------------------------------------------------------------


def case_warnings(case: CaseReport) -> list[str]:
    """Every warning of the case, for its header: the case's own, then each foot's."""
    out = list(case.warnings)
    for fr in case.feet:
        side = fr.side.value
        quality = fr.measurements.quality
        if not quality.passed:
            verdict = "processed anyway (--force)" if quality.forced else "failed"
            out.append(f"{side} scan: the quality gate {verdict}: {'; '.join(quality.reasons)}")
        out += [f"{side} prescription: {w}" for w in fr.prescription.warnings]
        if fr.measurements.classification.arch_conflict:
            out.append(f"{side} classification: {fr.measurements.classification.arch_conflict}")
        if fr.validation is not None:
            for check in _checks(fr.validation):
                if not check.get("passed", True):
                    out.append(f"{side} insole: validation check {check.get('name')} failed: "
                               f"{check.get('message') or ''}".rstrip(": "))
            if fr.validation.get("forced"):
                out.append(f"{side} insole: written despite failed validation (--force)")
        for path in fr.files:
            if not Path(path).is_file():
                out.append(f"{side}: output file {Path(path).name} is missing")
    out += [f"case: output file {Path(p).name} is missing" for p in case.files
            if not Path(p).is_file()]
    return out


def _checks(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    checks = validation.get("checks") or []
    if isinstance(checks, Mapping):
        return [{"name": name, **dict(check)} for name, check in checks.items()]
    return [dict(check) for check in checks]


# --- formatting --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def format_measurement(name: str, value: float | None) -> str:
    """A measurement as the report shows it: mm to 0.1, degrees signed to 0.1, indices to 0.001."""
    if value is None:
        return "—"
    if name.endswith("_deg"):
        return f"{value:+.1f}"
    if name.endswith("_mm"):
        return f"{value:.1f}"
    return f"{value:.3f}"


def _unit(name: str) -> str:
    return {"_mm": "mm", "_deg": "°", "_pct": "% FL"}.get(name[name.rfind("_"):], "")


def _format_field(name: str, value: Any) -> str:
    """A prescription field's value with its unit."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "value"):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    if isinstance(value, float | int):
        number = f"{value:+.1f}" if name.endswith("_deg") and value else f"{value:.1f}"
        unit = _unit(name)
        return f"{number} {unit}".strip() if unit != "°" else f"{number}°"
    return str(value)


def _format_number(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int):
        return f"{value:.4g} {unit}".strip()
    return f"{value} {unit}".strip()


def _label(name: str) -> str:
    for suffix in ("_mm", "_deg", "_pct"):
        name = name.removesuffix(suffix)
    return name.replace("_", " ")


def _verdict(passed: bool, *, forced: bool = False) -> str:
    if passed:
        return '<span class="pass">pass</span>'
    if forced:
        return '<span class="forced">FAILED, forced</span>'
    return '<span class="fail">FAILED</span>'


# --- the page ----------------------------------------------------------------------------------


def _page(case: CaseReport, out: Path, plots: dict[str, dict[Side, str]]) -> str:
    from orthocad import params as params_module

    params = case.params or params_module.defaults()
    sides = " and ".join(fr.side.value for fr in case.feet)
    created = case.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>Case {_e(case.case_id)}</h1>",
        '<p class="meta">'
        f"<span>{_e(created)}</span><span>{_e(sides)}</span>"
        f"<span>orthocad {_e(__version__)}</span>"
        f"<span>parameters {_e(params_module.digest(params)[:12])}</span></p>",
        _warnings_html(case_warnings(case)),
        _scans_html(case),
        _measurements_html(case, params),
        _prescriptions_html(case),
        _plots_html(case, plots),
        _views_html(case),
        _files_html(case, out),
        _references_html(case, params),
        '<footer>Review every section, then sign the files off: '
        "<code>orthocad signoff DIR --by NAME</code>. "
        f"Written by orthocad {_e(__version__)}.</footer>",
    ]
    scripts = "\n".join(
        f'<script src="{ASSETS_DIR}/scene_{fr.side.value}.js"></script>' for fr in case.feet)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self' file:; \
object-src 'none'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>orthocad case {_e(case.case_id)}</title>
<link rel="stylesheet" href="{ASSETS_DIR}/report.css">
</head>
<body>
{chr(10).join(body)}
{scripts}
<script src="{ASSETS_DIR}/viewer.js"></script>
</body>
</html>
"""


def _warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return '<div class="ok-box" id="warnings">No warnings.</div>'
    items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
    return (f'<div class="warnings" id="warnings"><h2>Warnings ({len(warnings)})</h2>'
            f"<ul>{items}</ul></div>")


def _scans_html(case: CaseReport) -> str:
    rows = []
    for fr in case.feet:
        foot, quality = fr.foot, fr.measurements.quality
        suffix = foot.source.suffix.lstrip(".").lower() if foot.source else "arrays"
        checks = ", ".join(
            f"{c.name} {c.value:.3g} {c.unit} (limit {c.limit:g})" + ("" if c.passed else " ✗")
            for c in quality.checks)
        detected = "detected" if foot.side_detected else "given"
        rows.append(
            f"<tr><td>{_e(fr.side.value)} <span class='small'>({detected})</span></td>"
            f"<td>{_e(foot.scan_kind.value)}, {_e(fr.measurements.loading.value)}</td>"
            f"<td>{_e(suffix)}</td><td class='num'>{len(foot.points_mm):,}</td>"
            f"<td class='hash'>{_e(foot.sha256 or '—')}</td>"
            f"<td>{_verdict(quality.passed, forced=quality.forced) if checks else 'not assessed'}"
            f"<div class='small'>{_e(checks)}</div></td></tr>")
    return ("<h2>Scans</h2><table id='scans'><tr><th>side</th><th>kind</th><th>format</th>"
            "<th>points</th><th>SHA-256</th><th>quality</th></tr>" + "".join(rows) + "</table>")


def _measurements_html(case: CaseReport, params: Params) -> str:
    from orthocad.norms import normal_ranges

    ranges = normal_ranges(params)
    head = "".join(f"<th>{_e(fr.side.value)}</th>" for fr in case.feet)
    rows = []
    for name in SPEC_FIELDS + EXTRA_FIELDS:
        cells = []
        for fr in case.feet:
            m = fr.measurements
            value = getattr(m, name)
            c = m.classification
            drives = [kind for kind, driver in (("arch", c.arch_driver),
                                                ("rearfoot", c.rearfoot_driver)) if driver == name]
            badge = "".join(f'<span class="badge">drives {k} class</span>' for k in drives)
            title = f' title="{_e(m.missing[name])}"' if name in m.missing else ""
            cls = "num driver" if drives else "num"
            cells.append(
                f'<td class="{cls}"{title} data-field="{_e(name)}" data-side="{fr.side.value}">'
                f'<span class="value">{_e(format_measurement(name, value))}</span>{badge}</td>')
        label = _LABELS.get(name, _label(name).capitalize())
        rows.append(f"<tr><td>{_e(label)} <span class='small'>{name}</span></td>"
                    f"<td>{_e(_unit(name))}</td>{''.join(cells)}"
                    f"<td>{_e(ranges.get(name, ''))}</td></tr>")
    classes = []
    for fr in case.feet:
        c = fr.measurements.classification
        arch = c.arch.value if c.arch else "not classified"
        rear = c.rearfoot.value if c.rearfoot else "not classified"
        conflict = (f"<li class='forced'>conflict: {_e(c.arch_conflict)}</li>"
                    if c.arch_conflict else "")
        classes.append(
            f"<div><h3>{_e(fr.side.value)}</h3><ul>"
            f"<li>arch: <b data-class='arch' data-side='{fr.side.value}'>{_e(arch)}</b>"
            f" — by {_e(c.arch_driver or 'no index')}: {_e(c.arch_reason)}</li>{conflict}"
            f"<li>rearfoot: <b data-class='rearfoot' data-side='{fr.side.value}'>{_e(rear)}</b>"
            f" — by {_e(c.rearfoot_driver or 'no index')}: {_e(c.rearfoot_reason)}</li></ul></div>")
    missing = [f"<li>{_e(fr.side.value)} {_e(name)}: {_e(reason)}</li>"
               for fr in case.feet for name, reason in fr.measurements.missing.items()]
    missing_html = f"<p class='small'>Not measured:</p><ul class='small'>{''.join(missing)}</ul>" \
        if missing else ""
    return (
        "<h2>Measurements</h2><table id='measurements'><tr><th>measurement</th><th>unit</th>"
        f"{head}<th>normal range</th></tr>{''.join(rows)}</table>{missing_html}"
        f"<h3>Classification</h3><div class='sides {_columns(case)}'>{''.join(classes)}</div>")


def _prescriptions_html(case: CaseReport) -> str:
    parts = ["<h2>Prescription</h2>"]
    for fr in case.feet:
        rows = []
        for d in fr.prescription.decisions:
            override = d.by == "clinician"
            badge = '<span class="badge override">clinician override</span>' if override else ""
            threshold = (f"<div class='small'>threshold: {_e(d.threshold)}</div>"
                         if d.threshold not in (None, "") else "")
            source = (f'<a href="#ref-{_e(d.source)}">{_e(d.source)}</a>' if d.source
                      else "clinician")
            rows.append(
                f"<tr{' class=override' if override else ''} data-field='{_e(d.field)}'>"
                f"<td>{_e(_label(d.field))} <span class='small'>{_e(d.field)}</span></td>"
                f"<td class='num'>{_e(_format_field(d.field, d.value))}</td>"
                f"<td>{_e(d.rule)}{badge}</td><td>{_e(d.reason)}{threshold}</td>"
                f"<td>{source}</td></tr>")
        parts.append(
            f"<h3>{_e(fr.side.value)} device</h3>"
            f"<table class='prescription' id='prescription-{fr.side.value}'><tr><th>field</th>"
            "<th>value</th><th>rule</th><th>reason</th><th>source</th></tr>"
            f"{''.join(rows)}</table>")
    return "".join(parts)


_PLOTS = (
    ("plantar", "Plantar height map",
     "The sole's height above the support plane seen from above (toes up, medial marked), "
     "the foot's outline, the footprint (contact ≤ 3 mm, white) and its length thirds "
     "(heel, midfoot, forefoot) of the arch index."),
    ("sagittal", "Medial arch profile",
     "Section along the foot 8 mm inside its medial edge: the scanned sole, the sole raised by the "
     "shell (what a device without corrections would follow) and the insole's top surface."),
    ("heel", "Heel from behind",
     "Heel points (0–15 % FL) seen from behind, the slices at 10–35 mm with their centres, "
     "and the rearfoot line at the measured angle (eversion +)."),
    ("thickness", "Insole thickness",
     "Thickness of the insole (top above its flat bottom) over its outline, seen from above, "
     "with the metatarsal-head line."),
)


def _columns(case: CaseReport) -> str:
    return "two" if len(case.feet) == 2 else "one"


def _plots_html(case: CaseReport, plots: dict[str, dict[Side, str]]) -> str:
    parts = ["<h2>Plots</h2>"]
    for key, title, caption in _PLOTS:
        figures = "".join(
            f"<figure><img src='{ASSETS_DIR}/{_e(plots[key][fr.side])}' "
            f"alt='{_e(fr.side.value)}: {_e(title)}'>"
            f"<figcaption>{_e(fr.side.value)}</figcaption></figure>" for fr in case.feet)
        parts.append(f"<h3>{_e(title)}</h3><p class='small'>{_e(caption)}</p>"
                     f"<div class='sides {_columns(case)}'>{figures}</div>")
    return "".join(parts)


def _views_html(case: CaseReport) -> str:
    views = "".join(
        f"<div><h3>{_e(fr.side.value)}</h3>"
        f"<canvas class='view3d' id='view-{fr.side.value}' data-scene='{fr.side.value}'>"
        "</canvas></div>" for fr in case.feet)
    return ("<h2>3D view</h2><p class='small'>Each scan with its insole (the scan raised by the "
            "shell thickness, as worn). Drag to rotate, scroll to zoom, double-click to reset.</p>"
            f"<div class='sides {_columns(case)}'>{views}</div>")


def _files_html(case: CaseReport, out: Path) -> str:
    rows = []
    groups = [(fr.side.value, fr.files) for fr in case.feet] + [("case", case.files)]
    for owner, files in groups:
        for path in files:
            path = Path(path)
            shown = _relative(path, out)
            if path.is_file():
                rows.append(f"<tr><td>{_e(owner)}</td><td>{_e(shown)}</td>"
                            f"<td class='num'>{path.stat().st_size:,}</td>"
                            f"<td class='hash'>{file_sha256(path)}</td></tr>")
            else:
                rows.append(f"<tr><td>{_e(owner)}</td><td>{_e(shown)}</td>"
                            "<td class='fail'>missing</td><td></td></tr>")
    files = ("<table id='files'><tr><th></th><th>file</th><th>bytes</th><th>SHA-256</th></tr>"
             f"{''.join(rows)}</table>" if rows else "<p class='note'>No files listed.</p>")
    parts = ["<h2>Files and validation</h2>", files]
    for fr in case.feet:
        insole = fr.insole
        facts = (f"volume {insole.volume_mm3 / 1000:.1f} cm³, "
                 f"height {insole.max_height_mm:.1f} mm, "
                 f"minimum thickness {insole.min_thickness_mm:.2f} mm, "
                 f"{len(insole.mesh.faces):,} triangles")
        parts.append(f"<h3>{_e(fr.side.value)} insole</h3><p class='small'>{_e(facts)}</p>")
        if fr.validation is None:
            parts.append("<p class='note'>Not validated.</p>")
            continue
        v = fr.validation
        checks = "".join(
            f"<tr data-check='{_e(c.get('name'))}'><td>{_e(c.get('name'))}</td>"
            f"<td>{_verdict(bool(c.get('passed')))}</td>"
            f"<td class='num'>{_e(_format_number(c.get('value'), c.get('unit') or ''))}</td>"
            f"<td class='num'>{_e(_format_number(c.get('limit'), c.get('unit') or ''))}</td>"
            f"<td>{_e(c.get('message') or '')}</td></tr>" for c in _checks(v))
        checks += "".join(
            f"<tr data-check='{_e(name)}'><td>{_e(name)}</td><td class='note'>skipped</td>"
            f"<td></td><td></td><td>{_e(reason)}</td></tr>"
            for name, reason in (v.get("skipped") or {}).items())
        passed = bool(v.get("passed", all(c.get("passed") for c in _checks(v))))
        parts.append(
            f"<p>Validation: {_verdict(passed, forced=bool(v.get('forced')))}</p>"
            f"<table class='validation' id='validation-{fr.side.value}'><tr><th>check</th>"
            "<th>result</th><th>measured</th><th>limit</th><th>note</th></tr>"
            f"{checks}</table>")
    return "".join(parts)


def _references_html(case: CaseReport, params: Params) -> str:
    from orthocad import params as params_module
    from orthocad.norms import sources

    keys = [d.source for fr in case.feet for d in fr.prescription.decisions if d.source]
    keys += list(sources().values())
    keys += [params_module.describe(key)["source"] for key in _RANGE_PARAMS.values()]
    bibliography = params_module.bibliography()
    items = []
    for key in dict.fromkeys(keys):
        entry = bibliography.get(key, {})
        doi = f" doi:{_e(entry['doi'])}" if entry.get("doi") else ""
        items.append(f"<li id='ref-{_e(key)}'><b>{_e(key)}</b>: "
                     f"{_e(entry.get('cite', 'not in the bibliography'))}{doi}</li>")
    return f"<h2>Sources</h2><ol class='refs'>{''.join(items)}</ol>"


def _relative(path: Path, out: Path) -> str:
    try:
        return path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return path.name


# --- 3D scenes -------------------------------------------------------------------------------


def view_mesh(vertices: np.ndarray, faces: np.ndarray, *, max_faces: int = VIEW_FACES
              ) -> tuple[np.ndarray, np.ndarray]:
    """A mesh with at most ``max_faces`` triangles and 65,535 vertices, for the 3D view.

    Vertex clustering: vertices are merged per cubic cell (at their mean), the
    cell sized so the surface keeps about ``max_faces`` triangles; triangles
    that collapse are dropped. Shape is kept to about a cell (≈ 2 mm for a
    foot at 40k triangles); winding is kept. Unused vertices are dropped.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) > max_faces or len(np.unique(faces)) > 65_535:
        a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
        cell = np.sqrt(2.0 * area / max_faces)  # a cell of a surface holds ≈ 2 triangles
        while True:
            merged, clustered = _cluster(vertices, faces, cell)
            if len(clustered) <= max_faces and len(merged) <= 65_535:
                break
            cell *= 1.1 * np.sqrt(len(clustered) / max_faces)
        vertices, faces = merged, clustered
    used, faces = np.unique(faces, return_inverse=True)
    return vertices[used], faces.reshape(-1, 3)


def _cluster(vertices: np.ndarray, faces: np.ndarray, cell: float
             ) -> tuple[np.ndarray, np.ndarray]:
    keys = np.floor((vertices - vertices.min(axis=0)) / cell).astype(np.int64)
    _, label, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    label = label.ravel()
    merged = np.zeros((len(counts), 3))
    np.add.at(merged, label, vertices)
    merged /= counts[:, None]
    f = label[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
    return merged, f[np.sort(first)]


def _quantised(points: np.ndarray) -> dict[str, Any]:
    lo = points.min(axis=0)
    span = np.maximum(points.max(axis=0) - lo, 1e-9)
    q = np.round((points - lo) / span * 65535.0).astype("<u2")
    return {"lo": [float(v) for v in lo], "span": [float(v) for v in span],
            "positions": base64.b64encode(q.tobytes()).decode("ascii")}


def _scene(fr: FootReport) -> dict[str, Any]:
    """The foot's scan (raised by the shell, as worn) and its insole, in the output frame."""
    foot = fr.foot
    raised = foot.to_output(foot.points_mm) + [0.0, 0.0, fr.prescription.shell_thickness_mm]
    if foot.faces is not None and len(foot.faces):
        faces = foot.faces[:, ::-1] if foot.mirrored else foot.faces
        vertices, faces = view_mesh(raised, faces)
        scan = {"kind": "mesh", **_quantised(vertices),
                "indices": base64.b64encode(faces.astype("<u2").tobytes()).decode("ascii")}
    else:
        keep = np.arange(len(raised))
        if len(keep) > VIEW_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(raised), VIEW_POINTS,
                                                           replace=False))
        scan = {"kind": "points", **_quantised(raised[keep])}
    vertices, faces = view_mesh(fr.insole.mesh.vertices, fr.insole.mesh.faces)
    insole = {"kind": "mesh", **_quantised(vertices),
              "indices": base64.b64encode(faces.astype("<u2").tobytes()).decode("ascii")}
    # Looking at the medial side from behind and above: medial is +Y for a right foot.
    yaw = 2.2 if fr.side is Side.RIGHT else -2.2
    return {"yaw": yaw, "meshes": [
        {"name": "scan", "color": list(_SCAN_COLOR), **scan},
        {"name": "insole", "color": list(_INSOLE_COLOR), **insole},
    ]}


def _scene_script(fr: FootReport) -> str:
    key = json.dumps(fr.side.value)
    return ("window.ORTHOCAD_SCENES = window.ORTHOCAD_SCENES || {};\n"
            f"window.ORTHOCAD_SCENES[{key}] = {json.dumps(_scene(fr), separators=(',', ':'))};\n")


# --- plots -----------------------------------------------------------------------------------


def _write_plots(case: CaseReport, assets: Path) -> dict[str, dict[Side, str]]:
    """Each plot per foot as a PNG in ``assets``; returns plot -> side -> file name."""
    from matplotlib.figure import Figure

    draw = {"plantar": (_draw_plantar, (3.4, 5.4)), "sagittal": (_draw_sagittal, (5.4, 2.9)),
            "heel": (_draw_heel, (3.8, 3.6)), "thickness": (_draw_thickness, (3.4, 5.4))}
    names: dict[str, dict[Side, str]] = {key: {} for key in draw}
    for fr in case.feet:
        for key, (function, size) in draw.items():
            figure = Figure(figsize=size, dpi=_DPI, layout="constrained")
            function(figure, figure.add_subplot(), fr)
            name = f"{key}_{fr.side.value}.png"
            _save(figure, assets / name)
            names[key][fr.side] = name
    return names


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png", pil_kwargs={"compress_level": 3})


def _sign(foot: Foot) -> float:
    """Canonical y → output y: a left foot's canonical frame is mirrored."""
    return -1.0 if foot.mirrored else 1.0


def _grid_image(z: np.ndarray, x0: float, y0: float, step: float, h_sign: float
                ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A (y, x) grid as an image with x upward and h = h_sign · y rightward (``origin="lower"``)."""
    ny, nx = z.shape
    image = z.T
    y_last = y0 + (ny - 1) * step
    if h_sign > 0:
        h_range = (y0 - step / 2, y_last + step / 2)
    else:
        image = image[:, ::-1]
        h_range = (-y_last - step / 2, -y0 + step / 2)
    return image, (*h_range, x0 - step / 2, x0 + (nx - 1) * step + step / 2)


def _centres(extent: tuple[float, float, float, float], shape: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = shape
    dh = (extent[1] - extent[0]) / cols
    dv = (extent[3] - extent[2]) / rows
    return (extent[0] + dh * (np.arange(cols) + 0.5), extent[2] + dv * (np.arange(rows) + 0.5))


def _medial_label(ax: Axes, h_medial_sign: float) -> None:
    """'medial' and 'lateral' on their sides of a plot whose horizontal axis is h."""
    left, right = ("medial", "lateral") if h_medial_sign < 0 else ("lateral", "medial")
    ax.text(0.01, 0.99, left, transform=ax.transAxes, ha="left", va="top", fontsize=8,
            color="0.35")
    ax.text(0.99, 0.99, right, transform=ax.transAxes, ha="right", va="top", fontsize=8,
            color="0.35")


def _draw_plantar(figure: Figure, ax: Axes, fr: FootReport, *, compact: bool = False) -> None:
    p, m = fr.plantar, fr.measurements
    h_sign = -_sign(fr.foot)  # h = −y_out: as seen from above with the toes up
    image, extent = _grid_image(p.z_mm, p.x0_mm, p.y0_mm, p.step_mm, h_sign)
    top = float(np.nanpercentile(p.z_mm, 99)) if np.isfinite(p.z_mm).any() else 1.0
    shown = ax.imshow(image, origin="lower", extent=extent, cmap="viridis", vmin=0.0,
                      vmax=max(top, 1.0), interpolation="nearest")
    contact, _ = _grid_image(p.contact_mask.astype(float), p.x0_mm, p.y0_mm, p.step_mm, h_sign)
    hs, vs = _centres(extent, contact.shape)
    if contact.any():
        ax.contour(hs, vs, contact, levels=[0.5], colors="white", linewidths=1.0)
    ax.plot(h_sign * p.outline_mm[:, 1], p.outline_mm[:, 0], color="black", lw=1.0)
    columns = np.flatnonzero(p.contact_mask.any(axis=0))
    if len(columns):
        start = p.xs_mm[columns[0]] - p.step_mm / 2
        third = (p.xs_mm[columns[-1]] + p.step_mm / 2 - start) / 3.0
        for k in (1, 2):
            ax.axhline(start + k * third, color="white", ls="--", lw=0.9)
        for k, name in enumerate(() if compact else ("heel", "midfoot", "forefoot")):
            ax.text(extent[1], start + (k + 0.5) * third, f" {name}", fontsize=7, va="center",
                    ha="left", rotation=90, clip_on=False)
    for name, marker in (("mth1", "o"), ("mth5", "s"), ("arch_top", "^")):
        if name in m.landmarks_mm:
            x, y, _ = m.landmarks_mm[name]
            ax.plot(h_sign * y, x, marker=marker, color="red", ms=4, ls="none")
            if not compact:
                ax.annotate(name, (h_sign * y, x), fontsize=6, color="red",
                            xytext=(3, 3), textcoords="offset points")
    index = format_measurement("arch_index", m.arch_index)
    title = f"{fr.side.value}: plantar height" + ("" if compact else f", arch index {index}")
    _map_axes(ax, title, h_sign, compact=compact)
    if not compact:
        bar = figure.colorbar(shown, ax=ax, shrink=0.6)
        bar.set_label("height (mm)", fontsize=8)
        bar.ax.tick_params(labelsize=7)


def _map_axes(ax: Axes, title: str, h_medial_sign: float, *, compact: bool) -> None:
    ax.set_title(title, fontsize=8 if compact else 9)
    ax.set_xlabel("mm", fontsize=7 if compact else 8)
    if not compact:
        ax.set_ylabel("mm from the heel", fontsize=8)
    ax.tick_params(labelsize=6 if compact else 7)
    ax.set_aspect("equal")
    _medial_label(ax, h_medial_sign)


def _draw_sagittal(figure: Figure, ax: Axes, fr: FootReport) -> None:
    from matplotlib.path import Path as Outline
    from scipy.ndimage import median_filter

    p, m, insole = fr.plantar, fr.measurements, fr.insole
    sign = _sign(fr.foot)
    known = np.isfinite(p.z_mm)
    columns = np.flatnonzero(known.any(axis=0))
    xs = p.xs_mm[columns]
    edge = p.ys_mm[known.shape[0] - 1 - np.argmax(known[::-1, columns], axis=0)]  # max y: medial
    ys = median_filter(edge, size=9, mode="nearest") - _PROFILE_INSET_MM
    sole = p.height_at(xs, ys)
    inside = Outline(insole.outline_mm).contains_points(np.column_stack([xs, sign * ys]))
    top = np.where(inside, insole.top.at(xs, sign * ys), np.nan)
    shell = fr.prescription.shell_thickness_mm
    ax.fill_between(xs, 0.0, top, where=inside, color=_INSOLE_COLOR, alpha=0.25, lw=0)
    ax.plot(xs, top, color=_INSOLE_COLOR, lw=1.6, label="insole top")
    ax.plot(xs, sole + shell, color="0.45", ls=":", lw=1.2, label=f"sole + {shell:g} mm shell")
    ax.plot(xs, sole, color="black", lw=1.2, label="scanned sole")
    apex = fr.prescription.arch_apex_pct / 100.0 * (m.foot_length_mm or fr.foot.length_mm)
    ax.axvline(apex, color="0.6", lw=0.8, ls="--")
    ax.text(apex, 0.02, " arch apex", transform=ax.get_xaxis_transform(), fontsize=7,
            va="bottom", color="0.4")
    if "arch_top" in m.landmarks_mm:
        x, _, z = m.landmarks_mm["arch_top"]
        ax.plot(x, z, "^", color="red", ms=5, label="medial arch height")
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("mm from the heel", fontsize=8)
    ax.set_ylabel("height (mm)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{fr.side.value}: section {_PROFILE_INSET_MM:g} mm inside the medial edge",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncols=2, frameon=False)


def _draw_heel(figure: Figure, ax: Axes, fr: FootReport) -> None:
    m = fr.measurements
    h_sign = -_sign(fr.foot)  # h = −y_out: seen from behind
    length = m.foot_length_mm or fr.foot.length_mm
    points = fr.foot.points_mm
    heel = points[(points[:, 0] <= 0.15 * length) & (points[:, 2] <= HEEL_SLICES_MM[-1] + 10.0)]
    shown = heel[:: max(1, len(heel) // 6000)]
    ax.scatter(h_sign * shown[:, 1], shown[:, 2], s=0.6, color="0.7", lw=0, rasterized=True)
    centres = []
    for level in HEEL_SLICES_MM:
        band = heel[np.abs(heel[:, 2] - level) <= 1.5, 1]
        if len(band) < 2:
            continue
        ax.plot(h_sign * np.array([band.min(), band.max()]), [level, level], color="0.3", lw=0.8)
        centres.append((0.5 * (band.min() + band.max()), level))
    angle = m.rearfoot_angle_deg
    if angle is not None and centres:
        yc, zc = np.array(centres).T
        ax.plot(h_sign * yc, zc, "o", color="red", ms=3.5)
        zs = np.array([0.0, HEEL_SLICES_MM[-1] + 8.0])
        ys = yc.mean() + np.tan(np.radians(angle)) * (zs - zc.mean())
        label = format_measurement("rearfoot_angle_deg", angle)
        ax.plot(h_sign * ys, zs, color="red", lw=1.5, label=f"rearfoot line {label}°")
        ax.plot(h_sign * np.array([ys[0], ys[0]]), zs, color="0.5", ls="--", lw=0.8,
                label="vertical")
        ax.legend(fontsize=7, loc="lower center", frameon=False)
        title = f"{fr.side.value}: rearfoot angle {label}°"
    else:
        reason = m.missing.get("rearfoot_angle_deg", "not measured")
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(reason, 40)), transform=ax.transAxes,
                ha="center", va="center", fontsize=8)
        title = f"{fr.side.value}: rearfoot angle not measured"
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.set_xlabel("mm", fontsize=8)
    ax.set_ylabel("height (mm)", fontsize=8)
    ax.tick_params(labelsize=7)
    _medial_label(ax, h_sign)


def _draw_thickness(figure: Figure, ax: Axes, fr: FootReport, *, compact: bool = False) -> None:
    from matplotlib.path import Path as Outline

    insole = fr.insole
    grid = insole.top
    xs, ys = np.meshgrid(grid.xs_mm, grid.ys_mm)
    inside = Outline(insole.outline_mm).contains_points(np.column_stack([xs.ravel(), ys.ravel()]))
    thickness = np.where(inside.reshape(xs.shape), grid.z_mm - insole.bottom.z_mm, np.nan)
    image, extent = _grid_image(thickness, grid.x0_mm, grid.y0_mm, grid.step_mm, -1.0)
    shown = ax.imshow(image, origin="lower", extent=extent, cmap="magma_r", vmin=0.0,
                      interpolation="nearest")
    if np.isfinite(image).sum() > 4:
        hs, vs = _centres(extent, image.shape)
        lines = ax.contour(hs, vs, image, levels=np.arange(2.0, np.nanmax(image), 2.0),
                           colors="white", linewidths=0.5)
        ax.clabel(lines, fontsize=6, fmt="%g")
    ax.plot(-insole.outline_mm[:, 1], insole.outline_mm[:, 0], color="black", lw=1.0)
    (x1, y1), (x5, y5) = insole.mth_line_mm
    ax.plot([-y1, -y5], [x1, x5], color=_INSOLE_COLOR, lw=1.2, ls="--")
    title = f"{fr.side.value}: thickness" + ("" if compact else (
        f", min {insole.min_thickness_mm:.1f} mm, max {insole.max_height_mm:.1f} mm"))
    medial = 1.0 if fr.side is Side.RIGHT else -1.0  # output frame: medial +Y on a right foot
    _map_axes(ax, title, -medial, compact=compact)
    if not compact:
        bar = figure.colorbar(shown, ax=ax, shrink=0.6)
        bar.set_label("thickness (mm)", fontsize=8)
        bar.ax.tick_params(labelsize=7)


# --- one-page summary --------------------------------------------------------------------------


_SUMMARY_MEASURES = ("foot_length_mm", "ball_width_mm", "heel_width_mm", "arch_height_index",
                     "arch_index", "medial_arch_height_mm", "rearfoot_angle_deg")
_SUMMARY_FIELDS = ("device_length", "shell_thickness_mm", "rearfoot_post_deg",
                   "arch_support_height_mm", "heel_cup_depth_mm", "medial_skive_mm",
                   "forefoot_post_deg", "heel_lift_mm", "met_pad_height_mm")


def _write_summary(case: CaseReport, path: Path) -> None:
    """An A4 page: the case, its warnings, each foot's maps and its key values."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.27, 11.69), dpi=100)
    created = case.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figure.text(0.05, 0.965, f"Case {case.case_id}", fontsize=16, weight="bold")
    figure.text(0.05, 0.945, f"{created} · orthocad {__version__} · "
                f"{' and '.join(fr.side.value for fr in case.feet)}", fontsize=9, color="0.3")
    warnings = case_warnings(case)
    lines = [f"• {line}" for w in warnings[:6] for line in textwrap.wrap(w, 120)[:2]]
    if len(warnings) > 6:
        lines.append(f"… and {len(warnings) - 6} more warnings: see report.html")
    figure.text(0.05, 0.93, "\n".join(lines) if lines else "No warnings.", fontsize=7.5,
                va="top", color="#8a4b00" if warnings else "#1c7a2c")
    n = len(case.feet)
    maps = figure.add_gridspec(1, 4, left=0.05, right=0.97, bottom=0.45, top=0.85, wspace=0.3)
    for i, fr in enumerate(case.feet):
        plantar = figure.add_subplot(maps[0, 2 * i])
        _draw_plantar(figure, plantar, fr, compact=True)
        thickness = figure.add_subplot(maps[0, 2 * i + 1])
        _draw_thickness(figure, thickness, fr, compact=True)
        thickness.set_ylim(plantar.get_ylim())  # the same scale as the foot beside it
    table = figure.add_axes((0.05, 0.04, 0.9, 0.38))
    table.axis("off")
    rows, labels = [], []
    for name in _SUMMARY_MEASURES:
        labels.append(f"{_LABELS[name]} ({_unit(name)})" if _unit(name) else _LABELS[name])
        rows.append([format_measurement(name, getattr(fr.measurements, name)) for fr in case.feet])
    for key in ("arch", "rearfoot"):
        labels.append(f"{key} class")
        rows.append([_format_field(key, getattr(fr.measurements.classification, key))
                     for fr in case.feet])
    for name in _SUMMARY_FIELDS:
        labels.append(_label(name))
        rows.append([_format_field(name, getattr(fr.prescription, name)) for fr in case.feet])
    labels.append("validation")
    rows.append([("not run" if fr.validation is None else
                  "pass" if fr.validation.get("passed") else "FAILED") for fr in case.feet])
    cells = table.table(cellText=rows, rowLabels=labels,
                        colLabels=[fr.side.value for fr in case.feet], loc="upper center",
                        colWidths=[0.25] * n)
    cells.auto_set_font_size(False)
    cells.set_fontsize(8)
    cells.scale(1.0, 1.25)
    _save(figure, path)
