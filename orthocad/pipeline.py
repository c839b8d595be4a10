"""The stages composed: what the commands (and the batch workers) call.

Each function here is a short chain of stage functions; the logic lives in
the stage modules.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from orthocad import frame, scan
from orthocad import params as params_module
from orthocad.enums import Loading, OutputFrame, Side, Units
from orthocad.errors import InputError, RejectedError
from orthocad.measure import Measurements, measure
from orthocad.params import Params
from orthocad.prescribe import LldKind, Overrides, Prescription

if TYPE_CHECKING:
    from orthocad.export import Validation
    from orthocad.insole import Insole
    from orthocad.surface import Plantar


def read_scan(path: str | Path, *, units: Units = Units.AUTO) -> list[scan.Scan]:
    """Read and clean a scan file; a two-foot scan gives two scans."""
    return split_and_clean(scan.read(path, units=units))


def split_and_clean(raw: scan.Scan) -> list[scan.Scan]:
    """Clean a scan and split it into its feet (one or two)."""
    return scan.split_feet(scan.clean(raw))


def frame_feet(
    scans: list[scan.Scan], *, side: Side = Side.AUTO, name: str = "scan"
) -> list[frame.Foot]:
    """Frame each foot; an explicit side applies only to a one-foot scan."""
    if len(scans) > 1 and side is not Side.AUTO:
        raise InputError(
            f"{name}: holds two feet, so --side {side.value} is ambiguous; "
            "omit --side (each foot's side is detected)"
        )
    return [frame.canonical(one, side=side) for one in scans]


def load_feet(
    path: str | Path, *, units: Units = Units.AUTO, side: Side = Side.AUTO
) -> list[frame.Foot]:
    """Read, clean and frame every foot in a scan file."""
    return frame_feet(read_scan(path, units=units), side=side, name=Path(path).name)


def measure_scan(
    raw: scan.Scan,
    *,
    side: Side = Side.AUTO,
    loading: Loading = Loading.WEIGHT_BEARING,
    params: Params | None = None,
    overrides: Overrides | None = None,
    force: bool = False,
) -> list[Measurements]:
    """Clean, split, frame and measure a scan; refuse a scan that fails the quality gate.

    Parameter overrides (``--set``) apply per foot, once its side is known.
    With ``force`` a failing scan is measured anyway and marked (``quality.forced``).
    """
    name = raw.source.name if raw.source else "scan"
    feet = frame_feet(split_and_clean(raw), side=side, name=name)
    return measure_feet(feet, loading=loading, params=params, overrides=overrides, force=force,
                        name=name)


def measure_feet(
    feet: list[frame.Foot],
    *,
    loading: Loading = Loading.WEIGHT_BEARING,
    params: Params | None = None,
    overrides: Overrides | None = None,
    force: bool = False,
    name: str = "scan",
) -> list[Measurements]:
    """Measure framed feet; refuse one that fails the quality gate unless ``force`` (marked)."""
    results = [
        measure(foot, loading=loading, params=params_for(foot.side, params, overrides))
        for foot in feet
    ]
    return quality_gate(results, force=force, name=name)


def quality_gate(
    measured: list[Measurements], *, force: bool = False, name: str = "scan"
) -> list[Measurements]:
    """Refuse the first foot failing the scan-quality gate unless ``force``: then mark it."""
    results = list(measured)
    for i, result in enumerate(results):
        if result.quality.passed:
            continue
        if not force:
            raise RejectedError(
                f"{name} ({result.side.value} foot) fails the scan-quality gate: "
                f"{'; '.join(result.quality.reasons)} "
                "(or pass --force to process it anyway, marked)"
            )
        results[i] = dataclasses.replace(
            result, quality=dataclasses.replace(result.quality, forced=True)
        )
    return results


def params_for(side: Side, params: Params | None, overrides: Overrides | None) -> Params:
    """The parameters for one foot: the file's (or defaults), then that foot's overrides."""
    params = params or params_module.defaults()
    if overrides is None:
        return params
    return params_module.with_overrides(params, overrides.for_side(side)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class InsoleResult:
    """One foot's way from the scan to its device (for ``orthocad insole`` and ``run``)."""

    foot: frame.Foot
    params: Params  #: this foot's parameters (after its overrides)
    plantar: Plantar
    measurements: Measurements
    prescription: Prescription
    insole: Insole
    validation: Validation
    paths: tuple[Path, ...] = ()  #: the files written, once written
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)  #: stage -> seconds


def design_insoles(
    feet: list[frame.Foot],
    measured: list[Measurements],
    *,
    params: Params | None = None,
    overrides: Overrides | None = None,
    lld_mm: float = 0.0,
    short_side: Side | None = None,
    lld_kind: LldKind = LldKind.STRUCTURAL,
    case_id: str | None = None,
    force: bool = False,
    name: str = "scan",
) -> list[InsoleResult]:
    """Prescribe, build and validate each measured foot's insole (nothing is written).

    An insole failing validation raises :class:`RejectedError` naming every
    failure, unless ``force``: then it comes back marked (``validation.forced``).
    ``case_id`` is engraved under the heel when ``insole.engrave`` is on.
    """
    from orthocad import export, surface
    from orthocad import prescribe as rx_module
    from orthocad.insole import build_insole

    short = None if short_side in (None, Side.AUTO) else short_side
    results = []
    for foot, m in zip(feet, measured, strict=True):
        clock = _Clock()
        foot_params = params_for(foot.side, params, overrides)
        rx = clock("prescribe", rx_module.prescribe, m, lld_mm=lld_mm, short_side=short,
                   lld_kind=lld_kind, params=params, overrides=overrides)
        plantar = clock("plantar", surface.plantar, foot)
        device = clock("build", build_insole, foot, rx, params=foot_params, plantar=plantar,
                       measurements=m, case_id=case_id)
        validation = clock("validate", export.validate, device, params=foot_params,
                           plantar=plantar, prescription=rx, measurements=m)
        results.append(InsoleResult(
            foot=foot, params=foot_params, plantar=plantar, measurements=m, prescription=rx,
            insole=device, validation=validation, timings_s=clock.seconds))
    failed = [r for r in results if not r.validation.passed]
    if failed and not force:
        raise RejectedError("; ".join(
            export.rejection(f"{name} ({r.foot.side.value} foot)", r.validation) for r in failed))
    return [dataclasses.replace(r, validation=dataclasses.replace(
        r.validation, forced=not r.validation.passed)) for r in results]


class _Clock:
    """Calls stages and keeps how long each took."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[stage] = round(time.perf_counter() - start, 4)


def make_insoles(
    path: str | Path,
    out_dir: str | Path,
    *,
    side: Side = Side.AUTO,
    units: Units = Units.AUTO,
    loading: Loading = Loading.WEIGHT_BEARING,
    params: Params | None = None,
    overrides: Overrides | None = None,
    lld_mm: float = 0.0,
    short_side: Side | None = None,
    lld_kind: LldKind = LldKind.STRUCTURAL,
    output_frame: OutputFrame = OutputFrame.CANONICAL,
    force: bool = False,
    case_id: str | None = None,
) -> list[InsoleResult]:
    """Scan file → each foot's validated insole, written as ``out_dir/<stem>_<side>.*``.

    Per foot: measure, prescribe, build, validate; then the STL, STEP and 3MF,
    ``<stem>_<side>_validation.json`` and ``<stem>_<side>_prescription.json``.
    A scan failing the quality gate or an insole failing validation raises
    :class:`RejectedError` and writes nothing, unless ``force``: then every
    file is written, the failures marked. All files appear together or none.
    ``case_id`` (default: :func:`default_case_id` of the scan) goes into the files'
    metadata and is engraved under the heel (``insole.engrave``); never the file's
    name, which may be a patient's.
    """
    from orthocad import export

    path = Path(path)
    raw = scan.read(path, units=units)
    case_id = export.check_case_id(case_id or default_case_id(raw.sha256))
    feet = frame_feet(split_and_clean(raw), side=side, name=path.name)
    measured = measure_feet(feet, loading=loading, params=params, overrides=overrides,
                            force=force, name=path.name)
    designs = design_insoles(feet, measured, params=params, overrides=overrides, lld_mm=lld_mm,
                             short_side=short_side, lld_kind=lld_kind, case_id=case_id,
                             force=force, name=path.name)
    results = []
    with export.staged(out_dir) as staging:
        for r in designs:
            stem = f"{path.stem}_{r.foot.side.value}"
            names = write_foot_files(r, staging, stem=stem, case_id=case_id,
                                     output_frame=output_frame)
            results.append(dataclasses.replace(
                r, paths=tuple(Path(out_dir) / n.name for n in names)))
    return results


def default_case_id(sha256: str) -> str:
    """``case-`` and a scan's SHA-256 prefix: opaque, and the same for the same scan."""
    return f"case-{sha256[:12]}"


def write_foot_files(
    result: InsoleResult,
    folder: Path,
    *,
    stem: str,
    case_id: str,
    output_frame: OutputFrame = OutputFrame.CANONICAL,
    measurements: bool = False,
) -> list[Path]:
    """Write one foot's STL, STEP, 3MF, validation and prescription JSON (and, with
    ``measurements``, its measurements JSON) into ``folder`` as ``<stem>...``."""
    from orthocad import export

    foot = result.foot
    transform = output_to_scan(foot) if output_frame is OutputFrame.SCAN else None
    names = export.write_set(
        result.insole, folder, stem=stem, validation=result.validation, params=result.params,
        case_id=case_id, scan_sha256=foot.sha256, transform=transform, frame=output_frame)
    if measurements:
        names.append(export.write_json(folder / f"{stem}_measurements.json",
                                       result.measurements.to_dict()))
    names.append(export.write_json(folder / f"{stem}_prescription.json",
                                   result.prescription.to_dict()))
    return names


def output_to_scan(foot: frame.Foot) -> np.ndarray:
    """(4, 4) from the output frame (the canonical frame un-mirrored) to the scan's coordinates.

    A rotation and translation for either foot: a left foot's mirror in the
    canonical frame and the one undoing it cancel.
    """
    unmirror = np.diag([1.0, -1.0 if foot.mirrored else 1.0, 1.0, 1.0])
    return foot.from_canonical @ unmirror
