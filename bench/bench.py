"""Median time of each pipeline stage on a realistic synthetic scan (~200k points).

    python bench/bench.py [--points 200000] [--repeat 5]

Prints one line per stage with its median and its target; exits 1 when a
target is missed, so a regression shows. Imports are done (and timed)
before the stages, which are timed after imports, as the targets state.
"""

from __future__ import annotations

import argparse
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
}


def _median_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from orthocad import frame, scan, surface, synthetic
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
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
