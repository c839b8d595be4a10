"""Whole-process time of ``orthocad run``, as a user sees it: one foot and a pair.

    python bench/run.py [--repeat 3] [--points 200000]

Each run is a fresh ``orthocad run`` process (imports, scans to files and the
report included) on synthetic scans of ``--points`` points (0.5 mm noise, 1 %
outliers, a random pose). Prints the median wall time of each case with its
target, and the median of each stage ``orthocad run`` records in case.json
(``timings_s``); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: case -> target median in seconds on the reference 2-core machine (issue 7, "Speed")
TARGETS = {"one foot": 8.0, "pair": 12.0}
STRETCH_ONE_FOOT_S = 6.0


def _command() -> list[str]:
    """``orthocad`` as installed next to this Python (else the module)."""
    script = Path(sys.executable).parent / "orthocad"
    return [str(script)] if script.exists() else [sys.executable, "-m", "orthocad.cli"]


def _scans(folder: Path, points: int) -> dict[str, list[str]]:
    from orthocad import scan, synthetic

    one = synthetic.synth_scan(synthetic.FootShape(), n_points=points, noise_mm=0.5,
                               outlier_fraction=0.01, pose="random", seed=7)
    foot = scan.write(folder / "foot.ply", one.points, normals=one.normals)
    left, right = synthetic.write_synthetic(folder / "pair", n=1, seed=7, n_points=points,
                                            pair=True)
    return {"one foot": [str(foot)], "pair": ["--left", str(left), "--right", str(right)]}


def _run(args: list[str], out: Path) -> tuple[float, dict[str, float]]:
    """Wall time of one ``orthocad run`` and the stage timings it recorded."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([*_command(), "run", *args, "--case-id", "bench", "--out", str(out),
                           "--quiet"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"orthocad run failed ({done.returncode}):\n{done.stderr}")
    return seconds, json.loads((out / "case.json").read_text())["timings_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--points", type=int, default=200_000)
    args = parser.parse_args()

    missed = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for case, scan_args in _scans(folder, args.points).items():
            walls, stages = [], {}
            for _ in range(args.repeat):
                seconds, timings = _run(scan_args, folder / "case")
                walls.append(seconds)
                for stage, value in timings.items():
                    stages.setdefault(stage, []).append(value)
            median, target = statistics.median(walls), TARGETS[case]
            flag = ""
            if median > target:
                flag, missed = "  MISSED", missed + 1
            elif case == "one foot" and median > STRETCH_ONE_FOOT_S:
                flag = f"  (stretch {STRETCH_ONE_FOOT_S:g} s missed)"
            print(f"{case:<10} median {median:6.2f} s  target {target:g} s{flag}  "
                  f"(runs: {', '.join(f'{w:.2f}' for w in walls)}; {args.points} points)")
            for stage, values in stages.items():
                print(f"    {stage:<22} {statistics.median(values):7.3f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
