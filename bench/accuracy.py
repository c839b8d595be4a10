"""Measurement accuracy on synthetic feet with exact truth, under the spec's conditions.

    python bench/accuracy.py [--n 200] [--seed 0] [--workers 2]

Each foot: random controls over their whole range, random side and scan kind,
a random rigid pose, 0.5 mm noise, 1 % outliers, a floor patch on half of
them, metres on a quarter. Prints a markdown table: per measurement, the mean
and max absolute error and the share of feet within the spec tolerance; then
the pooled share of all checks (every measurement of every foot, and every
foot's side) within tolerance. Exits 0 when the pooled share is at least 98 %
and the side is always right (the spec's bar), else 1.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

#: The spec's tolerances (measurements.md, "Accuracy that the tests hold the code to").
TOLERANCES = {
    "foot_length_mm": 1.5,
    "ball_width_mm": 1.5,
    "heel_width_mm": 1.5,
    "truncated_length_mm": 3.0,
    "fifth_met_x_mm": 3.0,
    "dorsal_height_mm": 1.0,
    "medial_arch_height_mm": 1.0,
    "arch_index": 0.02,
    "arch_height_index": 0.01,
    "rearfoot_angle_deg": 1.0,
}
#: The share of all checks that must be within tolerance (spec).
BAR = 0.98


def one_foot(seed: int) -> dict:
    """Measure one random synthetic foot; return truth, measured values and conditions."""
    from orthocad import scan, synthetic
    from orthocad.enums import Units
    from orthocad.pipeline import measure_scan

    rng = np.random.default_rng(seed)
    shape = synthetic.random_shape(rng)
    units = Units.M if rng.random() < 0.25 else Units.MM
    data = synthetic.synth_scan(
        shape, n_points=200_000, noise_mm=0.5, outlier_fraction=0.01,
        floor=bool(rng.random() < 0.5), pose="random", units=units, seed=seed,
    )
    raw = scan.from_points(data.points, normals=data.normals)
    [measured] = measure_scan(raw, force=True)
    values = {name: getattr(measured, name) for name in TOLERANCES}
    return {"seed": seed, "truth": data.truth, "measured": values,
            "side_ok": measured.side.value == data.truth["side"],
            "scan_kind": shape.scan_kind.value}


def run(n: int, *, seed: int = 0, workers: int = 2) -> list[dict]:
    """``n`` feet from consecutive seeds (deterministic), measured on ``workers`` processes."""
    seeds = [seed * 100_003 + i for i in range(n)]
    if workers <= 1:
        return [one_foot(s) for s in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one_foot, seeds))


def errors(results: list[dict], name: str) -> np.ndarray:
    """Absolute errors of one measurement over the feet whose truth has it (inf: not measured)."""
    pairs = [(r["truth"][name], r["measured"][name]) for r in results
             if r["truth"].get(name) is not None]
    return np.array([abs(m - t) if m is not None else np.inf for t, m in pairs])


def summarise(results: list[dict]) -> list[dict]:
    """Per measurement: count, mean and max absolute error, share within tolerance."""
    rows = []
    for name, tolerance in TOLERANCES.items():
        e = errors(results, name)
        finite = e[np.isfinite(e)]
        rows.append({
            "measurement": name, "n": len(e), "tolerance": tolerance,
            "mean_error": float(finite.mean()) if len(finite) else float("nan"),
            "max_error": float(e.max()) if len(e) else float("nan"),
            "within": float(np.mean(e <= tolerance)) if len(e) else float("nan"),
        })
    rows.append({"measurement": "side", "n": len(results), "tolerance": 0, "mean_error": 0.0,
                 "max_error": 0.0, "within": float(np.mean([r["side_ok"] for r in results]))})
    return rows


def pooled(results: list[dict]) -> tuple[int, int]:
    """(checks within tolerance, all checks): every measured truth of every foot, and its side."""
    within = total = 0
    for name, tolerance in TOLERANCES.items():
        e = errors(results, name)
        within += int(np.count_nonzero(e <= tolerance))
        total += len(e)
    within += sum(bool(r["side_ok"]) for r in results)
    return within, total + len(results)


def meets_bar(results: list[dict]) -> bool:
    """The spec's bar: at least 98 % of all checks within tolerance, and the side always right."""
    within, total = pooled(results)
    return within >= BAR * total and all(r["side_ok"] for r in results)


def table(results: list[dict]) -> str:
    """The markdown table the README shows, with the pooled share under it."""
    lines = ["| measurement | feet | tolerance | mean error | max error | within tolerance |",
             "|---|---|---|---|---|---|"]
    for row in summarise(results):
        lines.append(f"| {row['measurement']} | {row['n']} | {row['tolerance']:g} "
                     f"| {row['mean_error']:.3f} | {row['max_error']:.3f} | {row['within']:.1%} |")
    within, total = pooled(results)
    lines.append(f"| **all checks** | {len(results)} | | | | **{within / total:.1%}** "
                 f"({within}/{total}) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    results = run(args.n, seed=args.seed, workers=args.workers)
    print(table(results))
    return 0 if meets_bar(results) else 1


if __name__ == "__main__":
    sys.exit(main())
