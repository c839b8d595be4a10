"""The stages composed: what the commands (and the batch workers) call.

Each function here is a short chain of stage functions; the logic lives in
the stage modules.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orthocad import frame, scan
from orthocad import params as params_module
from orthocad.enums import Loading, Side, Units
from orthocad.errors import InputError, RejectedError
from orthocad.measure import Measurements, measure
from orthocad.params import Params
from orthocad.prescribe import Overrides


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
    results = [
        measure(foot, loading=loading, params=params_for(foot.side, params, overrides))
        for foot in feet
    ]
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
