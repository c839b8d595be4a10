"""Median time of each pipeline stage on a realistic synthetic scan (~200k points).

    python bench/bench.py [--points 200000] [--repeat 5]

Prints one line per stage with its median and its target; exits 1 when a
target is missed, so a regression shows. Imports are done (and timed)
before the stages, which are timed after imports, as the targets state.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# stage -> target median in seconds on the reference 2-core machine
TARGETS = {
    "ingest": None,
    "clean": None,
    "frame": None,
    "ingest+clean+frame": 1.0,
    "normals+poisson": 3.0,
    "insole": 3.0,  # build + validate + write STL, STEP, 3MF
    "insole: build": None,
    "insole: validate": None,
    "insole: write": None,
    "measure": 1.0,
    "file->measurements": 1.0,
    "report (one foot)": 1.5,
}


def _median_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _report_time(foot, out: Path, repeat: int) -> float:
    """Median time of write_report for one foot, its insole built beforehand (not timed)."""
    from orthocad import insole, measure, prescribe, report, surface

    plantar, measured = surface.plantar(foot), measure.measure(foot)
    rx = prescribe.prescribe(measured)
    built = insole.build_insole(foot, rx, plantar=plantar, measurements=measured)
    case = report.CaseReport("bench", (report.FootReport(foot, plantar, measured, rx, built),))
    return _median_time(lambda: report.write_report(case, out), repeat)[0]


def _insole_times(foot, out: Path, repeat: int) -> dict[str, float]:
    """Median times to build, validate and write (STL, STEP, 3MF) one insole, engraved with
    its case id as ``orthocad run`` builds it, and of the three together; inputs not timed."""
    from orthocad import export, insole, measure, prescribe, surface
    from orthocad._native import cadquery

    cadquery()  # imported before the clock starts
    plantar, measured = surface.plantar(foot), measure.measure(foot)
    rx = prescribe.prescribe(measured)
    times: dict[str, list[float]] = {"build": [], "validate": [], "write": []}
    for _ in range(repeat):
        start = time.perf_counter()
        built = insole.build_insole(foot, rx, plantar=plantar, measurements=measured,
                                    case_id="bench")
        built_at = time.perf_counter()
        validation = export.validate(built, plantar=plantar, prescription=rx,
                                     measurements=measured)
        validated_at = time.perf_counter()
        export.export_insole(built, out, stem="foot", case_id="bench", force=True,
                             validation=validation)
        times["build"].append(built_at - start)
        times["validate"].append(validated_at - built_at)
        times["write"].append(time.perf_counter() - validated_at)
    medians = {f"insole: {part}": statistics.median(t) for part, t in times.items()}
    medians["insole"] = statistics.median(map(sum, zip(*times.values(), strict=True)))
    return medians


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from orthocad import frame, measure, scan, surface, synthetic
    from orthocad._native import open3d

    open3d()
    foot = synthetic.synth_scan(
        synthetic.FootShape(),
        n_points=args.points,
        noise_mm=0.5,
        outlier_fraction=0.01,
        floor=True,
        pose="random",
        seed=7,
    )
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = scan.write(Path(tmp) / "foot.ply", foot.points, normals=foot.normals)
        medians["ingest"], raw = _median_time(lambda: scan.read(path), args.repeat)
        medians["clean"], cleaned = _median_time(lambda: scan.clean(raw), args.repeat)
        medians["frame"], framed = _median_time(lambda: frame.canonical(cleaned), args.repeat)
        medians["ingest+clean+frame"] = medians["ingest"] + medians["clean"] + medians["frame"]
        medians["normals+poisson"], _ = _median_time(lambda: surface.mesh(framed), args.repeat)
        medians.update(_insole_times(framed, Path(tmp) / "insole", args.repeat))
        medians["measure"], _ = _median_time(lambda: measure.measure(framed), args.repeat)
        medians["file->measurements"] = medians["ingest+clean+frame"] + medians["measure"]
        medians["report (one foot)"] = _report_time(framed, Path(tmp) / "case", args.repeat)

    missed = 0
    print(
        f"{'stage':<22} {'median s':>9} {'target s':>9}  ({args.points} points, {args.repeat} runs)"
    )
    for stage, seconds in medians.items():
        target = TARGETS[stage]
        flag = ""
        if target is not None and seconds > target:
            flag, missed = "  MISSED", missed + 1
        print(f"{stage:<22} {seconds:>9.3f} {target if target else '':>9}{flag}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak memory of the whole run: {peak_mb:.0f} MB")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
