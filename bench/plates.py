"""Build-plate packing: time and plates used for 20 and 40 insoles.

    python bench/plates.py [--repeat 3]

Real insoles of a synthetic foot (three-quarter and full length, the left the
mirror image of the right), scaled over shoe sizes ≈ EU 36–46, on a 380×284 mm
bed with a 4 mm gap. Prints the median packing time, the plates used and the
area bound (total part area over bed area), and the time of the per-file work
(footprint of an STL's mesh, one plate's 3MF); exits 1 when 40 parts take more
than the target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_40_S = 5.0  # "40 parts in a few seconds", on the reference 2-core machine
BED = (380.0, 284.0)


def _insole(device_length: str):
    from orthocad import frame, insole, measure, pipeline, prescribe, scan, surface, synthetic
    from orthocad.enums import Side, Units

    synth = synthetic.synth_scan(synthetic.FootShape(side=Side.RIGHT), n_points=60_000, seed=3)
    cleaned = pipeline.split_and_clean(scan.from_points(synth.points, units=Units.MM))
    foot = frame.canonical(cleaned[0], side=Side.RIGHT)
    plantar, m = surface.plantar(foot), measure.measure(foot)
    rx = prescribe.prescribe(m, overrides={"device_length": device_length})
    return insole.build_insole(foot, rx, plantar=plantar, measurements=m).mesh


def _parts(outline: np.ndarray, scales: np.ndarray):
    from orthocad.enums import Side
    from orthocad.plate import Part

    parts = []
    for k, scale in enumerate(scales):
        parts.append(Part(f"case{k:02d}", Side.LEFT, outline[::-1] * [scale, -scale]))
        parts.append(Part(f"case{k:02d}", Side.RIGHT, outline * scale))
    return parts


def _median(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from orthocad import plate

    meshes = {kind: _insole(kind) for kind in ("three_quarter", "full")}
    seconds, outline = _median(lambda: plate.footprint(meshes["full"]), args.repeat)
    print(f"footprint of a {len(meshes['full'].faces)}-triangle insole mesh: {seconds:.3f} s")
    rng = np.random.default_rng(5)
    cases = [
        ("20 three-quarter, sizes spread", "three_quarter", np.linspace(0.85, 1.12, 10)),
        ("40 three-quarter, random sizes", "three_quarter", rng.uniform(0.85, 1.12, 20)),
        ("40 full-length, random sizes", "full", rng.uniform(0.85, 1.12, 20)),
    ]
    missed = False
    for label, kind, scales in cases:
        parts = _parts(plate.footprint(meshes[kind]), scales)
        seconds, packing = _median(lambda p=parts: plate.pack(p, bed_mm=BED, gap_mm=4.0),
                                   args.repeat)
        target = TARGET_40_S if len(parts) == 40 else None
        missed |= target is not None and seconds > target
        print(f"{label}: {seconds:.2f} s, {len(packing.plates)} plates "
              f"(area bound {packing.area_bound}), fill "
              f"{', '.join(f'{p.fill:.0%}' for p in packing.plates)}"
              + (f"  [target {target:g} s]" if target else ""))
    first = packing.plates[0]
    by_name = {p.part.name: meshes["full"] for p in first.placements}
    with tempfile.TemporaryDirectory() as folder:
        seconds, _ = _median(lambda: plate.write_plate_3mf(first, by_name, Path(folder) / "p.3mf"),
                             args.repeat)
    print(f"3MF of a {len(first.placements)}-part plate: {seconds:.2f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
