"""Synthetic feet with exact ground truth, for tests, benchmarks and demos.

A foot is built as a slab between a plantar and a dorsal height field over a
top-view outline, with rounded walls where the two meet, and lofted along x
into a closed triangle mesh:

- the outline carries the heel, the lateral border with the fifth
  metatarsal head, the medial border with the first metatarsal head bulge,
  and a toe block whose front is a staircase of rounded toe tips (the hallux
  longest, on the medial side);
- the plantar field is pressed flat on the floor (z = 0) under the heel pad,
  a lateral midfoot band, the ball and the toe pads, and lifted into a
  medial arch vault and the toe sulcus;
- the dorsal field carries the instep, the toes with grooves between them,
  and the leg, cut off flat at the ankle height (the cut is a cap in the
  mesh, never part of a scan);
- the rearfoot is sheared medially with height for an everted heel.

The geometry is then moved into the canonical frame of ``docs/frame.md`` by
a small reference implementation of that page (support plane z = 0,
principal axis of the silhouette, origin at the pternion and on the axis
through the silhouette's centroid), and scaled in x and y so that its foot
length is the requested one.

A full scan sees all of the foot but the ankle cut. A plantar scan (plantar
scanner, foam impression) sees it from below only: the surface below the
trim height whose outward normal points down and that no other part hides
from below, i.e. a height field z(x, y) that never holds an upward-facing
surface (toe dorsum, the upper walls). Its heel walls stop near the heel's
widest point (≈ 26 mm), below the rearfoot angle's top slice, as on real
plantar scans of that depth.

:func:`truth` measures the scanned surface with an independent, exact
reference implementation of the page's measurements: it clips and
rasterises the mesh's triangles (no point sampling), and applies the plantar
rule (n_z < −0.5) to the normal interpolated between vertex normals, i.e.
to the smooth surface the mesh samples. Its values move by less than 0.04 mm,
0.003 of arch index and 0.002° when the mesh is refined twice over, so a
pipeline that estimates the frame and the measurements from sampled points
can be held to them.

Nothing in the pipeline imports this module.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from orthocad.enums import ScanKind, Side, Units
from orthocad.errors import InputError


class ShapeError(InputError, ValueError):
    """A synthetic foot's control, or a synthetic scan's option, is out of range."""


#: Allowed range of each numeric control of :class:`FootShape`.
RANGES: dict[str, tuple[float, float]] = {
    "foot_length_mm": (220.0, 310.0),
    "ball_width_mm": (80.0, 125.0),
    "heel_width_mm": (50.0, 80.0),
    "dorsal_height_mm": (45.0, 85.0),
    "medial_arch_height_mm": (0.0, 28.0),
    "arch_contact_width_mm": (0.0, 70.0),
    "rearfoot_angle_deg": (-8.0, 12.0),
    "ankle_height_mm": (100.0, 130.0),
    "trim_height_mm": (30.0, 80.0),
}


@dataclass(frozen=True)
class FootShape:
    """The controls of a synthetic foot (millimetres and degrees).

    Each control moves its own measurement monotonically over its range
    while the others stay at their defaults (the truth is what
    :func:`truth` measures; the notes say how close it stays to the
    control). Couplings that real feet have are kept: a lower arch widens
    the footprint, a medial arch height of 0 lays the whole midfoot on the
    floor whatever the contact width, an everted heel is a little wider.
    """

    #: Heel to hallux tip; equals the truth's ``foot_length_mm``. 220–310.
    foot_length_mm: float = 260.0
    #: Outline width across the metatarsal heads (truth ≈ +0.4 mm). 80–125.
    ball_width_mm: float = 100.0
    #: Heel width below 30 mm at 10–22 %FL (truth ≈ +0.7 mm at 3°). 50–80.
    heel_width_mm: float = 64.0
    #: Dorsal height at 50 %FL (truth ≈ +0.1 mm). 45–85.
    dorsal_height_mm: float = 64.0
    #: Lift of the arch vault at the medial border at its apex (≈ 42 %FL);
    #: the truth's medial arch height is within ≈ 1 mm of it at the default
    #: contact width. 0–28.
    medial_arch_height_mm: float = 14.0
    #: Width of the lateral midfoot band on the floor (z = 0) at its narrowest
    #: (≈ 42 %FL), from the lateral border; below ≈ 15 mm the band lifts off
    #: the floor, as in a cavus foot. Drives the arch index (0.13–0.33 at
    #: the default arch height). 0–70.
    arch_contact_width_mm: float = 25.0
    #: Rearfoot eversion (+, valgus: heel slices move medially with height)
    #: or inversion (−); the truth is within ≈ 0.05°. −8 to +12.
    rearfoot_angle_deg: float = 3.0
    #: Height of the flat cut through the leg (full scans). 100–130.
    ankle_height_mm: float = 115.0
    #: Plantar scans keep only the surface below this height that is seen from
    #: below (the lower envelope: the sole and the walls up to the foot's widest
    #: point, ≈ 26 mm at the heel, or up to where an everted or inverted heel's
    #: overhanging wall ends). 30–80.
    trim_height_mm: float = 40.0
    side: Side = Side.RIGHT
    scan_kind: ScanKind = ScanKind.FULL

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value) and lo <= value <= hi):
                raise ShapeError(f"FootShape.{name} = {value!r} is outside {lo:g}–{hi:g}")
            object.__setattr__(self, name, float(value))
        try:
            side = Side(self.side)
            kind = ScanKind(self.scan_kind)
        except ValueError as exc:
            raise ShapeError(
                f"FootShape: {exc}; use Side.LEFT or RIGHT, ScanKind.FULL or PLANTAR"
            ) from exc
        if side is Side.AUTO:
            raise ShapeError("FootShape.side must be Side.LEFT or Side.RIGHT, not AUTO")
        object.__setattr__(self, "side", side)
        object.__setattr__(self, "scan_kind", kind)
        ratio = self.ball_width_mm / self.foot_length_mm
        if not 0.30 <= ratio <= 0.50:
            raise ShapeError(
                f"ball_width_mm / foot_length_mm = {ratio:.2f} is outside 0.30–0.50: "
                "no real foot is that narrow or that broad"
            )
        if self.heel_width_mm > 0.85 * self.ball_width_mm:
            raise ShapeError(
                f"heel_width_mm = {self.heel_width_mm:g} is more than 0.85 × ball_width_mm; "
                "the forefoot must be wider than the heel"
            )
        ratio = self.dorsal_height_mm / self.foot_length_mm
        if not 0.15 <= ratio <= 0.35:
            raise ShapeError(
                f"dorsal_height_mm / foot_length_mm = {ratio:.2f} is outside 0.15–0.35"
            )

    def controls(self) -> dict[str, float | str]:
        """The controls as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {
            "side": self.side.value,
            "scan_kind": self.scan_kind.value,
        }


# --------------------------------------------------------------------------
# The parametric foot, in construction coordinates (mm): heel back at x = 0,
# hallux tip at x = L, y medial, z up, heel symmetric about y = 0.
# --------------------------------------------------------------------------


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _plateau(s: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    """0 outside [a, d], 1 on [b, c], smooth ramps between."""
    return _smoothstep((s - a) / (b - a)) * (1.0 - _smoothstep((s - c) / (d - c)))


def _round(u: np.ndarray) -> np.ndarray:
    """Quarter-circle edge profile: 0 at the outline, 1 (with zero slope) at u = 1."""
    u = np.clip(u, 0.0, 1.0)
    return np.sqrt(u * (2.0 - u))


def _pchip(s: list[float], v: list[float]) -> PchipInterpolator:
    return PchipInterpolator(np.asarray(s, float), np.asarray(v, float), extrapolate=True)


def _superellipse(y: np.ndarray, y_side: float, y_tip: float, x_tip: float, depth: float,
                  p: float) -> np.ndarray:
    """x of a toe front: from (x_tip − depth, y_side), tangent to x, to (x_tip, y_tip)."""
    u = np.clip((y - y_tip) / (y_side - y_tip), 0.0, 1.0)
    return x_tip - depth + depth * (1.0 - u**p) ** (1.0 / p)


class _Foot:
    """The analytic foot of one :class:`FootShape`, before shear and frame."""

    def __init__(self, shape: FootShape) -> None:
        L = self.L = shape.foot_length_mm
        bw, hh = shape.ball_width_mm, shape.heel_width_mm / 2
        self.H = shape.ankle_height_mm
        self.r_back = 0.10 * L  # heel back: half an ellipse of semi-axes r_back × hh
        self.hh = hh

        # Toes, hallux first: widths, tips, and the y of their borders (medial first).
        bm = 0.42 * bw  # y of the first metatarsal head's bulge (medial apex)
        bl = bw - bm  # −y of the fifth metatarsal head (lateral apex)
        widths = bw * np.array([0.27, 0.17, 0.155, 0.145, 0.14])
        self.tips = L * (1.0 - np.array([0.0, 0.03, 0.068, 0.105, 0.15]))
        edges = (bm - 0.05 * bw) - np.concatenate([[0.0], np.cumsum(widths)])
        self.toe_edges = edges
        self.toe_centres = 0.5 * (edges[:-1] + edges[1:])
        y_hal = self.toe_centres[0]
        gaps = -np.diff(self.tips)
        depth = np.minimum(0.75 * gaps, 0.7 * widths[:4])
        depth_5 = 0.6 * widths[4]
        depth_hal_med = 0.95 * widths[0] / 2
        riser = 1.2  # y-width of the slanted step between neighbouring toe tips

        # The toe front x_front(y), lateral branch (strictly increasing up to the
        # hallux tip) then medial branch (decreasing): tabulated densely.
        ys, xs = [], []
        for k in range(4, -1, -1):  # fifth toe to hallux
            y_side = edges[k + 1] + (riser / 2 if k < 4 else 0.0)
            y_tip = y_hal if k == 0 else edges[k] - riser / 2
            d = depth[k] if k < 4 else depth_5
            y = np.linspace(y_side, y_tip, 400)
            ys.append(y)
            xs.append(_superellipse(y, y_side, y_tip, self.tips[k], d, 2.2))
        y = np.linspace(y_hal, edges[0], 400)[1:]
        ys.append(y)
        xs.append(_superellipse(y, edges[0], y_hal, L, depth_hal_med, 2.0))
        self.front_y = np.concatenate(ys)
        self.front_x = np.concatenate(xs)
        n_lat = 400 * 5
        self.front_lat = (self.front_x[:n_lat], self.front_y[:n_lat])
        self.front_med = (self.front_x[n_lat - 1:][::-1], self.front_y[n_lat - 1:][::-1])
        self.x_lat_corner = self.tips[4] - depth_5  # where the lateral border meets toe 5
        self.x_med_corner = L - depth_hal_med  # where the medial border meets the hallux

        # Outline borders behind the toe front (PCHIP keeps the apexes at the knots).
        r = self.r_back
        straight = 8.0  # straight run into the toe corners (keeps d_front continuous)
        self.lat_border = _pchip(
            [r, 0.22 * L, 0.45 * L, 0.635 * L, 0.73 * L, self.x_lat_corner - straight,
             self.x_lat_corner],
            [-hh, -hh, -(hh + 0.6 * (bl - hh)), -bl, -bl + 0.3 * (bl + edges[5]), edges[5],
             edges[5]],
        )
        self.med_border = _pchip(
            [r, 0.22 * L, 0.40 * L, 0.56 * L, 0.63 * L, 0.71 * L, 0.79 * L,
             self.x_med_corner - straight, self.x_med_corner],
            [hh, hh, hh + 0.3 * (bm - hh), bm - 0.06 * bw, bm - 0.025 * bw, bm,
             edges[0] + 0.35 * (bm - edges[0]), edges[0], edges[0]],
        )

        # Heights of the outline (the widest point of each side), in s = x / L.
        h = shape.medial_arch_height_mm
        # (Identical up to 20 %FL: the flat knot at 0.2 decouples the rear piece
        # from the rest, and keeps the heel symmetric about y = 0.)
        self.m_lat = _pchip([0, 0.2, 0.25, 0.4, 0.635, 0.75, 0.86, 1.0],
                            [26, 25, 25, 19, 16, 13, 8, 8])
        self.m_med = _pchip([0, 0.2, 0.25, 0.32, 0.42, 0.55, 0.71, 0.8, 0.9, 1.0],
                            [26, 25, 25, max(27, h + 12), max(28, h + 13), max(24, h + 10), 18,
                             13, 10, 9])

        # Dorsum along the foot, the transverse dome, the leg and the toes.
        dh = shape.dorsal_height_mm
        H = self.H
        self.dorsum = _pchip(
            [0, 0.1, 0.2, 0.3, 0.35, 0.4, 0.5 - 2.0 / L, 0.6, 0.7, 0.76, 0.85, 1.0],
            [0.5 * H, 0.7 * H, 0.9 * H, 1.1 * H, 1.42 * dh, 1.2 * dh, dh, 0.84 * dh,
             0.66 * dh, 0.56 * dh, 0.5 * dh, 0.5 * dh],
        )
        self.leg = (0.17 * L, 0.13 * L, 0.47 * shape.heel_width_mm, 1.2 * H)  # x, ax, ay, K
        toe_h = L * np.array([0.09, 0.072, 0.066, 0.062, 0.058])
        self.toe_height = _pchip(
            np.concatenate([[edges[0] + 20], self.toe_centres, [edges[5] - 20]])[::-1],
            np.concatenate([[toe_h[0]], toe_h, [toe_h[4]]])[::-1],
        )
        self.toe_h = toe_h

        # Plantar field: penetration (how far the flattened pad would sink), arch, toes.
        self.press = _pchip([0, 0.2, 0.35, 0.6, 0.76, 0.84, 1.0], [7, 7, 5, 6, 6, 3, 3])
        self.arch_h = h
        s_c = 0.42
        m_c, p_c = float(self.m_lat(s_c)), float(self.press(s_c))
        psi = m_c / (m_c + p_c)  # the lateral wall reaches z = 0 where its rounding is psi
        r_lat_c = float(self._radius_lo_lat(np.array(s_c)))
        self.contact = shape.arch_contact_width_mm + r_lat_c * (1.0 - math.sqrt(1 - psi**2))
        self.kappa = 12.0  # width over which the lateral band's penetration fades to 0
        self.pads = [  # toe pads: x centre, y centre, x and y half-axes
            (self.tips[k] - (9.0 if k == 0 else 6.0), self.toe_centres[k],
             16.0 if k == 0 else 9.0, 0.55 * widths[k])
            for k in range(5)
        ]

    # -- outline --------------------------------------------------------------

    def outline(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lateral (min y) and medial (max y) border of the outline at x."""
        r, hh = self.r_back, self.hh
        heel = hh * _round(x / r)
        lat = np.where(x <= r, -heel, self.lat_border(x))
        lat = np.where(x >= self.x_lat_corner, np.interp(x, *self.front_lat), lat)
        med = np.where(x <= r, heel, self.med_border(x))
        med = np.where(x >= self.x_med_corner, np.interp(x, *self.front_med), med)
        return lat, med

    def x_front(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, self.front_y, self.front_x)

    def x_back(self, y: np.ndarray) -> np.ndarray:
        return self.r_back * (1.0 - _round(1.0 - np.abs(y) / self.hh))

    # -- rounding radii ---------------------------------------------------------

    def _radius_lo_lat(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, [0, 0.2, 0.4, 0.7, 0.8, 0.86, 1], [14, 13, 12, 12, 10, 6, 6])

    def _radius_lo_med(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, [0, 0.2, 0.25, 0.62, 0.7, 0.8, 0.86, 1], [14, 13, 4, 4, 12, 10, 6, 6])

    def _radius_hi(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s, [0, 0.3, 0.7, 0.8, 0.86, 1], [10, 14, 14, 10, 7, 7])

    # -- the two sheets -------------------------------------------------------

    def sheets(self, x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """y, plantar z and dorsal z at x and outline fraction t (0 lateral, 1 medial)."""
        L = self.L
        s = x / L
        lat, med = self.outline(x)
        y = lat + (med - lat) * t
        d_lat, d_med = y - lat, med - y
        d_front = self.x_front(y) - x
        d_back = x - self.x_back(y)
        # Products of edge profiles: the walls round off toward every border.
        e_lo = (_round(d_front / 7.0) * _round(d_back / 14.0)
                * _round(d_lat / self._radius_lo_lat(s)) * _round(d_med / self._radius_lo_med(s)))
        r_hi = self._radius_hi(s)
        e_hi = _round(d_front / 10.0) * _round(d_back / 12.0) * _round(d_lat / r_hi) * _round(
            d_med / r_hi)
        m = self.m_lat(s) + (self.m_med(s) - self.m_lat(s)) * t
        z_lo = np.maximum(0.0, m - (m - self._plantar(x, y, s, lat, med)) * e_lo)
        z_hi = np.minimum(self.H, m + (self._dorsal(x, y, s, lat, med) - m) * e_hi)
        return y, z_lo, z_hi

    def _plantar(self, x: np.ndarray, y: np.ndarray, s: np.ndarray, lat: np.ndarray,
                 med: np.ndarray) -> np.ndarray:
        """Plantar height far from the outline: < 0 where pressed onto the floor."""
        press = self.press(s)
        # Medial border of the lateral contact band: outside the foot at the heel
        # and the ball, ``contact`` in from the lateral border at the arch.
        kappa = self.kappa
        band = _plateau(s, 0.15, 0.28, 0.52, 0.66)
        y_c = med + kappa - (med + kappa - lat - self.contact) * band
        pressed = -press * np.minimum(1.0, ((y_c - y) / kappa) ** 2)
        # The vault spans from the band to the medial border at the apex, where
        # it rises to exactly the arch height; it fades out with the band.
        u = np.maximum(y - y_c, 0.0) / np.maximum(med - lat - self.contact, 10.0)
        rise = self.arch_h * _plateau(s, 0.2, 0.38, 0.46, 0.7) * (0.8 * u + 0.2 * u * u)
        arch = np.where(y <= y_c, pressed, rise)
        # Toes: a sulcus lifted 4 mm, pads pressed 3 mm.
        pad = np.zeros_like(x)
        for px, py, ax, ay in self.pads:
            r2 = ((x - px) / ax) ** 2 + ((y - py) / ay) ** 2
            pad = np.maximum(pad, np.clip(1.0 - r2, 0.0, 1.0) ** 2)
        toes = 4.0 - 7.0 * pad
        t = _smoothstep((s - 0.77) / 0.06)
        return (1 - t) * arch + t * toes

    def _dorsal(self, x: np.ndarray, y: np.ndarray, s: np.ndarray, lat: np.ndarray,
                med: np.ndarray) -> np.ndarray:
        """Dorsal height far from the outline (the leg rises above the cut)."""
        eta = (2 * y - lat - med) / np.maximum(med - lat, 1e-9)
        centre = 0.2 * _smoothstep((s - 0.22) / 0.1)  # symmetric rearfoot, medial crest ahead
        # A narrow ridge at the ankle front (only its crest reaches the cut), a
        # broad dome over the instep, flat across the toes.
        bulge = np.interp(s, [0, 0.35, 0.5, 0.76, 0.82, 1], [0.7, 0.7, 0.45, 0.45, 0, 0])
        dome = 1.0 - bulge * (eta - centre) ** 2
        m = self.m_lat(s) + (self.m_med(s) - self.m_lat(s)) * (eta + 1) / 2
        # Toes: per-toe heights with grooves between them.
        toes = self.toe_height(y)
        for k in range(1, 5):
            depth = 0.35 * min(self.toe_h[k - 1], self.toe_h[k])
            toes = toes - depth * np.exp(-(((y - self.toe_edges[k]) / 2.0) ** 2))
        toes = toes * np.interp(s, [0.8, 1.0], [1.0, 0.8])  # toes taper to the nail
        t = _smoothstep((s - 0.74) / 0.1)
        top = (1 - t) * self.dorsum(s) + t * toes
        dorsum = m + (top - m) * dome
        xl, ax, ay, k = self.leg
        leg = self.H + k * (1.0 - ((x - xl) / ax) ** 2 - (y / ay) ** 2)
        eps = 10.0  # smooth maximum: a fillet where the leg meets the dorsum
        return 0.5 * (dorsum + leg + np.sqrt((dorsum - leg) ** 2 + eps * eps))


_TURN_MM = 10.0  #: ring sampling: mm of arc that one radian of turning counts as


def _loft(foot: _Foot, n_x: int, n_half: int) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the foot: rings at x stations, poles at heel and hallux tip.

    Stations are spaced evenly in a monitor length that adds how far the
    section moves to how far x moves, so steep walls (heel back, leg, toe
    tips) get as many stations as they need. Each ring has ``n_half``
    segments on each sheet, evenly spaced in arc length plus turning.
    """
    L = foot.L
    xi = np.linspace(0.0, 1.0, 4000)
    x_fine = [0.5 * L * (1.0 - np.cos(np.pi * xi))]
    tau = np.linspace(0.0, 1.0, 60) ** 2
    for x_tip in foot.tips[1:]:  # the outline turns abruptly at each lesser toe tip
        x_fine.append(x_tip - 6.0 * tau)
        x_fine.append(x_tip + 2.0 * tau)
    x_fine = np.unique(np.clip(np.concatenate(x_fine), 0.0, L))
    t_coarse = 0.5 * (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, 41)))
    xx, tt = np.meshgrid(x_fine, t_coarse, indexing="ij")
    y, z_lo, z_hi = foot.sheets(xx, tt)
    ring = np.stack([np.concatenate([y, y], 1), np.concatenate([z_lo, z_hi], 1)], -1)
    step = np.sqrt(np.diff(x_fine) ** 2 + (np.diff(ring, axis=0) ** 2).sum(-1).max(1))
    monitor = np.concatenate([[0.0], np.cumsum(step)])
    x_st = np.interp(np.linspace(0.0, monitor[-1], n_x), monitor, x_fine)[1:-1]

    # Rings: each sheet resampled along its section (t found by inverting the length).
    n_f = 800
    t_f = 0.5 * (1.0 - np.cos(np.pi * np.linspace(0.0, 1.0, n_f)))
    xx = np.repeat(x_st[:, None], n_f, 1)
    y, z_lo, z_hi = foot.sheets(xx, np.broadcast_to(t_f, xx.shape))
    target = np.linspace(0.0, 1.0, n_half + 1)
    sheets = []
    for z in (z_lo, z_hi):
        # Arc length plus turning: fillets get more vertices, so the normals
        # follow the surface where the plantar rule (n_z < −0.5) cuts.
        dy, dz = np.diff(y), np.diff(z)
        heading = np.unwrap(np.arctan2(dz, dy), axis=1)
        turn = np.abs(np.diff(heading, axis=1))
        step = np.hypot(dy, dz)
        step[:, 1:] += _TURN_MM * 0.5 * turn
        step[:, :-1] += _TURN_MM * 0.5 * turn
        arc = np.concatenate([np.zeros((len(x_st), 1)), np.cumsum(step, 1)], 1)
        arc = arc / arc[:, -1:] + np.arange(len(x_st))[:, None] * 2.0
        t = np.interp((target + np.arange(len(x_st))[:, None] * 2.0).ravel(), arc.ravel(),
                      np.tile(t_f, len(x_st))).reshape(len(x_st), -1)
        t[:, 0], t[:, -1] = 0.0, 1.0
        sheets.append(t)
    xb = np.repeat(x_st[:, None], n_half + 1, 1)
    y_lo, z_lo, _ = foot.sheets(xb, sheets[0])
    y_hi, _, z_hi = foot.sheets(xb, sheets[1])
    ring_y = np.concatenate([y_lo, y_hi[:, -2:0:-1]], 1)
    ring_z = np.concatenate([z_lo, z_hi[:, -2:0:-1]], 1)
    ring_x = np.repeat(x_st[:, None], ring_y.shape[1], 1)
    n_ring = ring_y.shape[1]

    y0, z0, _ = foot.sheets(np.array([0.0]), np.array([0.5]))
    y1, z1, _ = foot.sheets(np.array([L]), np.array([0.5]))
    vertices = np.concatenate([
        [[0.0, y0[0], z0[0]]],
        np.stack([ring_x, ring_y, ring_z], -1).reshape(-1, 3),
        [[L, y1[0], z1[0]]],
    ])
    j = np.arange(n_ring)
    jn = (j + 1) % n_ring
    base = 1 + n_ring * np.arange(len(x_st) - 1)[:, None]
    a, b = base + j, base + jn
    c, d = b + n_ring, a + n_ring
    quads = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    last = 1 + n_ring * (len(x_st) - 1)
    fan0 = np.stack([np.zeros_like(j), 1 + jn, 1 + j], -1)
    fan1 = np.stack([last + j, last + jn, np.full_like(j, len(vertices) - 1)], -1)
    faces = np.concatenate([fan0, quads, fan1])
    tri = vertices[faces]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if volume < 0:
        faces = faces[:, ::-1]
    return vertices, faces


# --------------------------------------------------------------------------
# Reference implementation of docs/frame.md on a triangle mesh: exact
# clipping of the triangles (no point sampling) and rasters of their
# projections.
# --------------------------------------------------------------------------

_SILHOUETTE_TOP_MM = 40.0  #: frame.md: the silhouette is made of the points with 0 ≤ z ≤ 40
_SILHOUETTE_STEP_MM = 0.25  #: finer than frame.md's 1 mm: the limit its raster estimates
_FOOTPRINT_STEP_MM = 0.5  #: frame.md: arch-index areas on a 0.5 mm raster
_FOOTPRINT_Z_MM = 3.0  #: frame.md: footprint = plantar surface within 3 mm of the floor
_PLANTAR_NZ = -0.5  #: frame.md: the plantar surface has outward normal n_z < −0.5


def _clip(poly: np.ndarray, axis: int, value: float | np.ndarray, *, upper: bool) -> np.ndarray:
    """Clip convex polygons to ``coord <= value`` (``upper``) or ``coord >= value``.

    ``poly`` is (M, K, C): each polygon's vertices in order (x, y, z and any
    further coordinates to interpolate), padded by repeating its first vertex;
    all-NaN rows are empty. ``value`` is a scalar or one value per polygon.
    Returns (M, K + 1, C) in the same form (Sutherland–Hodgman on the
    polygons that straddle the plane).
    """
    m, k, c = poly.shape
    value = np.broadcast_to(np.asarray(value, float), (m,))
    d = poly[..., axis] - value[:, None]
    if not upper:
        d = -d
    inside = d <= 0.0  # NaN (empty rows) compare False: they stay empty
    out = np.concatenate([poly, poly[:, :1]], 1)
    out[~inside.any(1)] = np.nan
    cut = np.flatnonzero(inside.any(1) & ~inside.all(1))
    if len(cut) == 0:
        return out
    p, d, inside = poly[cut], d[cut], inside[cut]
    prev, d_prev, in_prev = np.roll(p, 1, 1), np.roll(d, 1, 1), np.roll(inside, 1, 1)
    cross = inside != in_prev
    t = np.where(cross, d_prev / np.where(cross, d_prev - d, 1.0), 0.0)
    # Edge prev → p emits the crossing point, then p itself if inside.
    cand = np.stack([prev + (p - prev) * t[..., None], p], 2).reshape(len(cut), 2 * k, c)
    valid = np.stack([cross, inside], 2).reshape(len(cut), 2 * k)
    slot = np.cumsum(valid, 1) - 1
    rows = np.broadcast_to(np.arange(len(cut))[:, None], valid.shape)
    res = np.empty((len(cut), k + 1, c))
    res[rows[valid], slot[valid]] = cand[valid]
    count = slot[:, -1] + 1
    pad = np.arange(k + 1)[None, :] >= count[:, None]
    res[pad] = np.repeat(res[:, 0], k + 1 - count, 0)
    out[cut] = res
    return out


def _clip_box(poly: np.ndarray, **bounds: float | np.ndarray) -> np.ndarray:
    """Clip to a box given as ``x_min=…, z_max=…`` (scalars or per-polygon arrays)."""
    for key, value in bounds.items():
        poly = _clip(poly, "xyz".index(key[0]), value, upper=key.endswith("max"))
    return poly


def _nonempty(poly: np.ndarray) -> np.ndarray:
    return poly[~np.isnan(poly[:, 0, 0])]


def _region(tri: np.ndarray, **bounds: float) -> np.ndarray:
    """The vertices of the surface clipped to a box: its extremes are the region's."""
    keep = np.ones(len(tri), bool)
    for key, value in bounds.items():  # skip the triangles wholly outside
        coord = tri[:, :, "xyz".index(key[0])]
        keep &= coord.min(1) <= value if key.endswith("max") else coord.max(1) >= value
    return _nonempty(_clip_box(tri[keep], **bounds)).reshape(-1, 3)


def _per_bin(tri: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each triangle clipped to every x bin ``[edges[i], edges[i+1]]`` it overlaps."""
    lo = np.searchsorted(edges, tri[:, :, 0].min(1), side="right") - 1
    hi = np.searchsorted(edges, tri[:, :, 0].max(1), side="left") - 1
    lo, hi = np.clip(lo, 0, len(edges) - 2), np.clip(hi, 0, len(edges) - 2)
    count = np.maximum(hi - lo + 1, 0)
    row = np.repeat(np.arange(len(tri)), count)
    b = lo[row] + np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    poly = _clip_box(tri[row], x_min=edges[b], x_max=edges[b + 1])
    keep = ~np.isnan(poly[:, 0, 0])
    return poly[keep], b[keep]


def _raster(tri: np.ndarray, x0: float, y0: float, step: float, shape: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells (i, j) whose centre lies in a triangle's xy projection, and z there."""
    xy = tri[:, :, :2]
    origin = np.array([x0, y0])
    lo = np.maximum(np.ceil((xy.min(1) - origin) / step - 0.5), 0).astype(np.int64)
    hi = np.minimum(np.floor((xy.max(1) - origin) / step - 0.5), np.array(shape) - 1).astype(
        np.int64)
    n = np.maximum(hi - lo + 1, 0)
    count = n[:, 0] * n[:, 1]
    row = np.repeat(np.arange(len(tri)), count)
    k = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    i = lo[row, 0] + k // n[row, 1]
    j = lo[row, 1] + k % n[row, 1]
    p = origin + (np.stack([i, j], 1) + 0.5) * step
    a, b, c = xy[row, 0], xy[row, 1], xy[row, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    l0 = 1.0 - l1 - l2
    tol = -1e-9  # cell centres on a shared edge belong to both triangles
    inside = (np.abs(den) > 1e-12) & (l0 >= tol) & (l1 >= tol) & (l2 >= tol)
    row, l0, l1, l2 = row[inside], l0[inside], l1[inside], l2[inside]
    z = l0 * tri[row, 0, 2] + l1 * tri[row, 1, 2] + l2 * tri[row, 2, 2]
    return i[inside], j[inside], z


def _fan(poly: np.ndarray) -> np.ndarray:
    """Triangles (fans) of clipped convex polygons (duplicates give empty ones)."""
    poly = _nonempty(poly)
    k = poly.shape[1]
    return np.concatenate([np.stack([poly[:, 0], poly[:, i], poly[:, i + 1]], 1)
                           for i in range(1, k - 1)])


@dataclass(frozen=True, eq=False)
class _Mask:
    """A boolean raster over the xy plane: cell (i, j) has centre origin + (i + ½, j + ½)·step."""

    x0: float
    y0: float
    step: float
    cells: np.ndarray

    def centres(self) -> np.ndarray:
        i, j = np.nonzero(self.cells)
        return np.array([self.x0, self.y0]) + (np.stack([i, j], 1) + 0.5) * self.step

    def contains(self, xy: np.ndarray) -> np.ndarray:
        ij = np.floor((xy - [self.x0, self.y0]) / self.step).astype(np.int64)
        ok = (ij >= 0).all(1) & (ij < self.cells.shape).all(1)
        out = np.zeros(len(xy), bool)
        out[ok] = self.cells[ij[ok, 0], ij[ok, 1]]
        return out


def _projection(tri: np.ndarray, step: float) -> _Mask:
    """The xy projection of a surface as a hole-filled raster.

    Every vertical line through the foot leaves it through a downward-facing
    triangle, so those alone cover the projection (at half the cost).
    """
    normal_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    tri = tri[normal_z < 0]
    lo = np.floor(tri[:, :, :2].reshape(-1, 2).min(0) / step) * step - step
    hi = tri[:, :, :2].reshape(-1, 2).max(0) + step
    shape = tuple(np.ceil((hi - lo) / step).astype(int))
    cells = np.zeros(shape, bool)
    i, j, _ = _raster(tri, lo[0], lo[1], step, shape)
    cells[i, j] = True
    return _Mask(float(lo[0]), float(lo[1]), step, ndimage.binary_fill_holes(cells))


def _silhouette(tri: np.ndarray) -> _Mask:
    """frame.md: the foot's surface with 0 ≤ z ≤ 40 mm projected on the support plane."""
    poly = _clip_box(tri, z_min=0.0, z_max=_SILHOUETTE_TOP_MM)
    return _projection(_fan(poly), _SILHOUETTE_STEP_MM)


def _frame(tri: np.ndarray) -> tuple[float, np.ndarray]:
    """frame.md steps 2–3 for a foot standing on z = 0: the rotation angle about z that
    takes the silhouette's major axis (pointing to the wider end) to +x, and the
    xy shift that then puts the pternion at x = 0 and the centroid at y = 0."""
    cells = _silhouette(tri).centres()
    centre = cells.mean(0)
    _, vecs = np.linalg.eigh(np.cov((cells - centre).T))
    axis = vecs[:, 1]
    along = (cells - centre) @ axis
    across = (cells - centre) @ np.array([-axis[1], axis[0]])
    q = (along.max() - along.min()) / 4
    back, front = along < along.min() + q, along > along.max() - q
    if np.ptp(across[back]) > np.ptp(across[front]):
        axis = -axis
    angle = math.atan2(axis[1], axis[0])
    rot = _rotation_z(-angle)[:2, :2]
    x_min = (tri.reshape(-1, 3)[:, :2] @ rot.T)[:, 0].min()
    return angle, -np.array([x_min, (rot @ centre)[1]])


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted mean of the adjacent faces' normals: the smooth surface's normal."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, faces[:, k], normal)
    return out / np.maximum(np.linalg.norm(out, axis=1), 1e-300)[:, None]


def _measure(vertices: np.ndarray, faces: np.ndarray, kind: ScanKind) -> dict[str, float | None]:
    """docs/frame.md's measurements of a scanned surface in the canonical frame."""
    tri = vertices[faces]
    fl = float(np.ptp(tri[:, :, 0]))
    x0 = float(tri[:, :, 0].min())

    ball = _region(tri, x_min=x0 + 0.55 * fl, x_max=x0 + 0.80 * fl)
    heel = _region(tri, x_min=x0 + 0.10 * fl, x_max=x0 + 0.22 * fl, z_max=30.0)
    out: dict[str, float | None] = {
        "foot_length_mm": fl,
        "ball_width_mm": float(np.ptp(ball[:, 1])),
        "heel_width_mm": float(np.ptp(heel[:, 1])),
    }

    # Medial and lateral outlines in 1 mm bins from the pternion, smoothed ±5 mm.
    edges = x0 + np.arange(0.0, math.ceil(fl) + 1.0)
    poly, b = _per_bin(tri, edges)
    y = poly[:, :, 1]
    y_max = np.full(len(edges) - 1, -np.inf)
    y_min = np.full(len(edges) - 1, np.inf)
    np.maximum.at(y_max, b, y.max(1))
    np.minimum.at(y_min, b, y.min(1))
    centre = 0.5 * (edges[:-1] + edges[1:])
    window = np.ones(11) / 11
    in_ball = (centre >= x0 + 0.55 * fl) & (centre <= x0 + 0.80 * fl)
    medial = np.convolve(y_max, window, "same")
    lateral = np.convolve(y_min, window, "same")
    out["truncated_length_mm"] = float(centre[in_ball][np.argmax(medial[in_ball])] - x0)
    out["fifth_met_x_mm"] = float(centre[in_ball][np.argmin(lateral[in_ball])] - x0)

    if kind is ScanKind.FULL:
        top = _region(tri, x_min=x0 + 0.5 * fl - 2.0, x_max=x0 + 0.5 * fl + 2.0)
        out["dorsal_height_mm"] = float(top[:, 2].max())
        out["arch_height_index"] = out["dorsal_height_mm"] / out["truncated_length_mm"]
    else:
        out["dorsal_height_mm"] = out["arch_height_index"] = None

    # Plantar surface: outward normal n_z < −0.5. The normal is interpolated
    # linearly from the vertex normals and carried as a fourth coordinate, so the
    # triangles are cut along the n_z = −0.5 contour of the smooth surface the
    # mesh samples (whole-face normals would shift that contour by up to a face,
    # ≈ 0.5 mm in height on the arch's medial wall).
    n_z = _vertex_normals(vertices, faces)[:, 2]
    plantar = _nonempty(_clip(np.concatenate([tri, n_z[faces][..., None]], 2), 3, _PLANTAR_NZ,
                              upper=True))[..., :3]

    # Medial arch height: per 1 mm bin over 25–65 %FL, the plantar surface in the
    # medial third of its local width; the highest point of all of them.
    a, z = x0 + 0.25 * fl, x0 + 0.65 * fl
    edges = np.append(np.arange(a, z, 1.0), z)
    poly, b = _per_bin(plantar, edges)
    y_hi = np.full(len(edges) - 1, -np.inf)
    y_lo = np.full(len(edges) - 1, np.inf)
    np.maximum.at(y_hi, b, np.nanmax(poly[:, :, 1], 1))
    np.minimum.at(y_lo, b, np.nanmin(poly[:, :, 1], 1))
    third = y_hi - (y_hi - y_lo) / 3
    poly = _clip(poly, 1, third[b], upper=False)
    kept = ~np.isnan(poly[:, 0, 0])
    top = np.full(len(edges) - 1, -np.inf)
    np.maximum.at(top, b[kept], poly[kept][:, :, 2].max(1))
    out["medial_arch_height_mm"] = float(top.max())
    # Its apex: the centroid of the crest (the bins within 3 mm of the top, weighted by their
    # rise above that level), the definition orthocad.measure uses.
    best = int(np.argmax(top))
    level = top[best] - 3.0
    known = np.isfinite(top)  # a bin without plantar surface neither ends the crest nor weighs
    below = np.flatnonzero(known & (top < level))
    first = below[below < best].max(initial=-1) + 1
    last = below[below > best].min(initial=len(top)) - 1
    weight = np.where(known, top - level, 0.0)[first:last + 1]
    centres = 0.5 * (edges[first:last + 1] + edges[first + 1:last + 2])
    out["medial_arch_apex_x_mm"] = float(np.sum(centres * weight) / np.sum(weight) - x0)

    # Arch index: footprint cells of the plantar surface within 3 mm of the floor,
    # over 0–80 %FL; thirds of the footprint's own x extent.
    step = _FOOTPRINT_STEP_MM
    low = _fan(plantar[np.nanmin(plantar[:, :, 2], 1) <= _FOOTPRINT_Z_MM])
    y0 = math.floor(low[:, :, 1].min() / step) * step
    shape = (math.ceil(0.8 * fl / step), math.ceil((low[:, :, 1].max() - y0) / step) + 1)
    height = np.full(shape, np.inf)
    i, j, zz = _raster(low, x0, y0, step, shape)
    np.minimum.at(height, (i, j), zz)
    i, _ = np.nonzero(height <= _FOOTPRINT_Z_MM)
    xc = x0 + (i + 0.5) * step
    xc = xc[xc <= x0 + 0.8 * fl]
    lo, hi = xc.min() - step / 2, xc.max() + step / 2
    third_len = (hi - lo) / 3
    middle = (xc >= lo + third_len) & (xc < lo + 2 * third_len)
    out["arch_index"] = float(middle.sum() / len(xc))

    # Rearfoot angle: mid-points of horizontal heel slices at z = 10…35 mm, 0–15 %FL.
    # Every slice must cut both walls of the heel, so the surface must reach above
    # 35 mm on each side of the lowest slice's mid-point (a plantar scan's lower
    # envelope stops near the heel's widest point, and a slice through one wall
    # has no mid-point).
    heights = np.arange(10.0, 36.0, 5.0)
    heel = _region(tri, x_min=x0, x_max=x0 + 0.15 * fl)
    first = _region(tri, x_min=x0, x_max=x0 + 0.15 * fl, z_min=heights[0], z_max=heights[0])
    mids = None
    if len(first):
        middle = 0.5 * (first[:, 1].max() + first[:, 1].min())
        medial, lateral = heel[heel[:, 1] >= middle, 2], heel[heel[:, 1] <= middle, 2]
        if len(medial) and len(lateral) and min(medial.max(), lateral.max()) > heights[-1]:
            cuts = [_region(tri, x_min=x0, x_max=x0 + 0.15 * fl, z_min=h, z_max=h)
                    for h in heights]
            mids = [0.5 * (cut[:, 1].max() + cut[:, 1].min()) for cut in cuts]
    out["rearfoot_angle_deg"] = (
        None if mids is None else math.degrees(math.atan(np.polyfit(heights, mids, 1)[0]))
    )
    return out


# --------------------------------------------------------------------------
# Canonical geometry and truth (cached per shape), meshes and scans.
# --------------------------------------------------------------------------

_TRUTH_KEYS = (
    "foot_length_mm", "ball_width_mm", "heel_width_mm", "truncated_length_mm",
    "fifth_met_x_mm", "dorsal_height_mm", "arch_height_index", "medial_arch_height_mm",
    "arch_index", "rearfoot_angle_deg", "medial_arch_apex_x_mm",
)
_SHADOW_STEP_MM = 0.5


@dataclass(frozen=True, eq=False)
class _Geometry:
    """A foot in the canonical frame, as a right foot."""

    vertices: np.ndarray  #: (V, 3) mm
    faces: np.ndarray  #: (F, 3) outward winding
    scanned: np.ndarray  #: (F,) bool: False for the ankle cap, which no scanner sees
    normals: np.ndarray  #: (V, 3) unit vertex normals of the scanned surface
    shadow: _Mask  #: the floor hidden under the foot (seen from above)


def _seen_from_below(vertices: np.ndarray, faces: np.ndarray, *, cell_mm: float = 2.0
                     ) -> np.ndarray:
    """Which faces a view from straight below sees: facing down and not hidden.

    A face is seen when its outward normal points down (n_z < 0) and the
    vertical ray up to its centroid crosses no other downward-facing face on
    the way (the first surface a ray from below meets faces down, so the
    others cannot hide it). Candidate pairs come from a ``cell_mm`` grid of
    the faces' xy bounding boxes.
    """
    tri = vertices[faces]
    down = np.flatnonzero(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] < 0)
    tri = tri[down]
    centroid = tri.mean(1)
    origin = tri[:, :, :2].reshape(-1, 2).min(0)
    lo = np.floor((tri[:, :, :2].min(1) - origin) / cell_mm).astype(np.int64)
    hi = np.floor((tri[:, :, :2].max(1) - origin) / cell_mm).astype(np.int64)
    n_rows = int(hi[:, 1].max()) + 1
    # Every (face, cell) of the faces' bounding boxes ...
    span = hi - lo + 1
    count = span[:, 0] * span[:, 1]
    face = np.repeat(np.arange(len(tri)), count)
    k = np.arange(len(face)) - np.repeat(np.cumsum(count) - count, count)
    cell = (lo[face, 0] + k // span[face, 1]) * n_rows + lo[face, 1] + k % span[face, 1]
    order = np.argsort(cell, kind="stable")
    face, cell = face[order], cell[order]
    # ... against the centroid in each cell.
    own = np.floor((centroid[:, :2] - origin) / cell_mm).astype(np.int64)
    own = own[:, 0] * n_rows + own[:, 1]
    start = np.searchsorted(cell, own, side="left")
    stop = np.searchsorted(cell, own, side="right")
    n = stop - start
    probe = np.repeat(np.arange(len(tri)), n)
    other = face[np.repeat(start, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
    keep = probe != other
    probe, other = probe[keep], other[keep]
    a, b, c = (tri[other, i] for i in range(3))
    p = centroid[probe]
    v0, v1, v2 = b[:, :2] - a[:, :2], c[:, :2] - a[:, :2], p[:, :2] - a[:, :2]
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    l0 = 1.0 - l1 - l2
    inside = (np.abs(den) > 1e-12) & (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
    z = l0 * a[:, 2] + l1 * b[:, 2] + l2 * c[:, 2]
    hidden = np.zeros(len(tri), bool)
    hidden[probe[inside & (z < p[:, 2] - 1e-6)]] = True
    seen = np.zeros(len(faces), bool)
    seen[down[~hidden]] = True
    return seen


def _right(shape: FootShape) -> FootShape:
    """The shape as a right foot: geometry and truth are side-independent."""
    return replace(shape, side=Side.RIGHT)


@functools.lru_cache(maxsize=32)  # ≈ 4 MB each
def _geometry(shape: FootShape, resolution: int) -> _Geometry:
    """The canonical foot of a right ``shape``, meshed ``resolution`` times finer than usual.

    (Called with all arguments positional, so that every call shares one cache key.)
    """
    foot = _Foot(shape)
    vertices, faces = _loft(foot, 300 * resolution, 64 * resolution)
    # Everted heel: horizontal slices up to 40 mm slide medially in proportion to
    # their height (so the slice mid-points lean by exactly the angle), less and
    # less above, and not at all from mid-foot on.
    x, z = vertices[:, 0], vertices[:, 2]
    lean = np.where(z <= 40.0, z, 40.0 + 30.0 * np.tanh((z - 40.0) / 30.0))
    fade = 1.0 - _smoothstep((x - 0.25 * foot.L) / (0.25 * foot.L))
    vertices[:, 1] += math.tan(math.radians(shape.rearfoot_angle_deg)) * lean * fade
    if shape.scan_kind is ScanKind.PLANTAR:
        # What a plantar scanner or a foam impression records: the surface below
        # the trim that is seen from below (its lower envelope), nothing else.
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        cut = trimesh.intersections.slice_mesh_plane(
            mesh, plane_normal=[0.0, 0.0, -1.0], plane_origin=[0.0, 0.0, shape.trim_height_mm])
        vertices, faces = np.array(cut.vertices), np.array(cut.faces)
        faces = faces[_seen_from_below(vertices, faces)]
        used = np.unique(faces)
        renumber = np.zeros(len(vertices), np.int64)
        renumber[used] = np.arange(len(used))
        vertices, faces = vertices[used], renumber[faces]
        scanned = np.ones(len(faces), bool)
    else:
        scanned = ~(vertices[faces][:, :, 2] == foot.H).all(1)
    # Into the frame of docs/frame.md, then scaled in x and y (which keeps that
    # frame) to the requested foot length.
    angle, shift = _frame(vertices[faces[scanned]])
    vertices = vertices @ _rotation_z(-angle).T
    vertices[:, :2] += shift
    vertices[:, :2] *= shape.foot_length_mm / np.ptp(vertices[faces[scanned]][:, :, 0])
    normals = _vertex_normals(vertices, faces[scanned])
    # The floor a scanner cannot see: the foot's projection, grown by a cell so
    # that no floor point lies under the rim of the foot.
    shadow = _projection(vertices[faces], _SHADOW_STEP_MM)
    shadow = replace(shadow, cells=ndimage.binary_dilation(shadow.cells, np.ones((3, 3), bool)))
    for array in (vertices, faces, scanned, normals, shadow.cells):
        array.flags.writeable = False
    return _Geometry(vertices, faces, scanned, normals, shadow)


@functools.lru_cache(maxsize=256)
def _truth(shape: FootShape, resolution: int) -> dict[str, float | None]:
    geo = _geometry(shape, resolution)
    return _measure(geo.vertices, geo.faces[geo.scanned], shape.scan_kind)


def truth(shape: FootShape) -> dict[str, float | str | None]:
    """The spec's measurements of the noise-free foot, computed from its mesh.

    Keys: ``foot_length_mm``, ``ball_width_mm``, ``heel_width_mm``,
    ``truncated_length_mm``, ``fifth_met_x_mm``, ``dorsal_height_mm``,
    ``arch_height_index``, ``medial_arch_height_mm``, ``arch_index``,
    ``rearfoot_angle_deg``, ``medial_arch_apex_x_mm`` (the centroid of the arch's
    crest, as :mod:`orthocad.measure` defines it) (floats, None when the scan
    kind cannot give them),
    ``side`` and ``scan_kind`` (strings). Cached per shape.
    """
    values = _truth(_right(shape), 1)
    return {key: values[key] for key in _TRUTH_KEYS} | {
        "side": shape.side.value,
        "scan_kind": shape.scan_kind.value,
    }


def foot_mesh(shape: FootShape) -> trimesh.Trimesh:
    """The noise-free foot surface in the canonical frame, mirrored for a left foot.

    Outward winding. A full foot is closed by a flat cap at the ankle cut
    (``metadata["cap_faces"]`` lists them; scans never contain it); a plantar
    foot is the open surface its scans sample: the part below the trim height
    seen from below.
    """
    geo = _geometry(_right(shape), 1)
    vertices, faces = np.array(geo.vertices), np.array(geo.faces)
    if shape.side is Side.LEFT:
        vertices[:, 1] *= -1.0
        faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    mesh.metadata["cap_faces"] = np.flatnonzero(~geo.scanned)
    return mesh


#: ``SyntheticScan.labels`` values.
FOOT, FLOOR, OUTLIER = 0, 1, 2


@dataclass(frozen=True, eq=False)
class SyntheticScan:
    """A sampled synthetic scan and the truth it must measure to."""

    points: np.ndarray  #: (N, 3) float64, in ``units``
    normals: np.ndarray  #: (N, 3) unit vectors (floor: +z; outliers: random), posed
    labels: np.ndarray  #: (N,) int8: FOOT, FLOOR or OUTLIER
    shape: FootShape
    truth: dict[str, float | str | None]  #: :func:`truth` (mm and degrees, whatever ``units``)
    pose: np.ndarray  #: (4, 4) rigid transform, mm: canonical frame → output
    units: Units


def synth_scan(
    shape: FootShape,
    *,
    n_points: int = 200_000,
    noise_mm: float = 0.0,
    outlier_fraction: float = 0.0,
    floor: bool = False,
    pose: np.ndarray | Literal["random"] | None = None,
    units: Units = Units.MM,
    seed: int = 0,
) -> SyntheticScan:
    """Sample a scan of the foot, as a scanner would deliver it.

    ``n_points`` points uniformly by area on the scanned surface (the ankle
    cap excluded), moved along their normal by Gaussian noise of
    ``noise_mm``; with ``floor``, a 1.6 FL × 2.2 ball-width patch of the plane
    z = 0 around the foot at the same density, minus the part hidden under
    the foot; then ``outlier_fraction`` × (foot + floor points) outliers
    uniform in the bounding box grown by 20 % on each side. All in the
    canonical frame (mirrored for a left foot), then moved by ``pose`` (a 4×4
    rigid transform in mm, or ``"random"``: a uniform random rotation and a
    translation of up to ±500 mm on each axis) and finally expressed in
    ``units``. Deterministic for a given ``seed``.
    """
    if not (isinstance(n_points, int | np.integer) and n_points > 0):
        raise ShapeError(f"n_points = {n_points!r} must be a positive integer")
    if not (math.isfinite(noise_mm) and noise_mm >= 0.0):
        raise ShapeError(f"noise_mm = {noise_mm!r} must be ≥ 0")
    if not 0.0 <= outlier_fraction < 1.0:
        raise ShapeError(f"outlier_fraction = {outlier_fraction!r} must be in [0, 1)")
    units = Units(units)
    if units is Units.AUTO:
        raise ShapeError("units must be mm, cm, m or in, not auto")
    rng = np.random.default_rng(seed)
    geo = _geometry(_right(shape), 1)

    faces = geo.faces[geo.scanned]
    tri = geo.vertices[faces]
    double_area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cumulative = np.cumsum(double_area)
    face = np.searchsorted(cumulative, rng.random(n_points) * cumulative[-1], side="right")
    face = np.minimum(face, len(tri) - 1)
    r1, r2 = np.sqrt(rng.random(n_points)), rng.random(n_points)
    weights = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)[:, :, None]  # uniform in a triangle
    points = (weights * tri[face]).sum(1)
    normals = (weights * geo.normals[faces[face]]).sum(1)  # the smooth surface's normal
    normals /= np.linalg.norm(normals, axis=1)[:, None]
    labels = np.full(n_points, FOOT, np.int8)

    if floor:
        fl, bw = shape.foot_length_mm, shape.ball_width_mm
        density = n_points / (cumulative[-1] / 2)
        size = np.array([1.6 * fl, 2.2 * bw])
        n_floor = int(round(density * size.prod()))
        xy = np.array([fl / 2, 0.0]) + (rng.random((n_floor, 2)) - 0.5) * size
        xy = xy[~geo.shadow.contains(xy)]
        points = np.concatenate([points, np.column_stack([xy, np.zeros(len(xy))])])
        normals = np.concatenate([normals, np.tile([0.0, 0.0, 1.0], (len(xy), 1))])
        labels = np.concatenate([labels, np.full(len(xy), FLOOR, np.int8)])
    points = points + normals * rng.normal(0.0, noise_mm, len(points))[:, None]

    n_out = int(round(outlier_fraction * len(points)))
    if n_out:
        lo, hi = points.min(0), points.max(0)
        lo, hi = lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo)
        direction = rng.normal(size=(n_out, 3))
        points = np.concatenate([points, lo + rng.random((n_out, 3)) * (hi - lo)])
        normals = np.concatenate([normals, direction / np.linalg.norm(direction, axis=1)[:, None]])
        labels = np.concatenate([labels, np.full(n_out, OUTLIER, np.int8)])

    order = rng.permutation(len(points))  # scanners deliver no useful order
    points, normals, labels = points[order], normals[order], labels[order]
    if shape.side is Side.LEFT:
        points[:, 1] *= -1.0
        normals[:, 1] *= -1.0
    pose = _pose(pose, rng)
    points = points @ pose[:3, :3].T + pose[:3, 3]
    normals = normals @ pose[:3, :3].T
    return SyntheticScan(
        points=points / units.to_mm, normals=normals, labels=labels, shape=shape,
        truth=truth(shape), pose=pose, units=units,
    )


def _pose(pose: np.ndarray | str | None, rng: np.random.Generator) -> np.ndarray:
    if pose is None:
        return np.eye(4)
    if isinstance(pose, str):
        if pose != "random":
            raise ShapeError(f"pose = {pose!r}: use None, a 4×4 rigid transform or 'random'")
        q = rng.normal(size=4)  # a normalised Gaussian quaternion is uniform on SO(3)
        w, x, y, z = q / np.linalg.norm(q)
        out = np.eye(4)
        out[:3, :3] = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
        out[:3, 3] = rng.uniform(-500.0, 500.0, 3)
        return out
    out = np.array(pose, dtype=float)
    rot = out[:3, :3] if out.shape == (4, 4) else None
    if (rot is None or not np.allclose(out[3], [0, 0, 0, 1])
            or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-9)
            or np.linalg.det(rot) < 0):
        raise ShapeError("pose must be a 4×4 rigid transform (rotation and translation)")
    return out


def random_shape(rng: np.random.Generator, *, side: Side | None = None,
                 scan_kind: ScanKind | None = None) -> FootShape:
    """A random, physically consistent foot covering every control's whole range.

    The ball width, heel width and dorsal height are drawn within their
    ranges and within the proportions of real feet (ball 0.33–0.44 FL, heel
    0.58–0.80 ball, dorsum 0.19–0.29 FL); the contact width follows the arch
    height (lower arches stand on more of the midfoot) with a wide spread.
    ``side`` and ``scan_kind`` are drawn unless given.
    """
    def draw(name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
        r_lo, r_hi = RANGES[name]
        return float(rng.uniform(max(lo, r_lo), min(hi, r_hi)))

    fl = draw("foot_length_mm")
    bw = draw("ball_width_mm", 0.33 * fl, 0.44 * fl)
    arch = draw("medial_arch_height_mm")
    lo, hi = RANGES["arch_contact_width_mm"]
    flatness = np.clip(1.0 - arch / RANGES["medial_arch_height_mm"][1] + rng.normal(0, 0.3), 0, 1)
    return FootShape(
        foot_length_mm=fl,
        ball_width_mm=bw,
        heel_width_mm=draw("heel_width_mm", 0.58 * bw, 0.80 * bw),
        dorsal_height_mm=draw("dorsal_height_mm", 0.19 * fl, 0.29 * fl),
        medial_arch_height_mm=arch,
        arch_contact_width_mm=float(lo + (hi - lo) * flatness),
        rearfoot_angle_deg=draw("rearfoot_angle_deg"),
        ankle_height_mm=draw("ankle_height_mm"),
        trim_height_mm=draw("trim_height_mm"),
        side=side if side is not None else (Side.LEFT, Side.RIGHT)[rng.integers(2)],
        scan_kind=scan_kind if scan_kind is not None else (
            ScanKind.FULL, ScanKind.PLANTAR)[rng.integers(2)],
    )


def _write_ply(path: Path, points: np.ndarray, normals: np.ndarray) -> None:
    """Write a binary little-endian PLY of float64 x y z nx ny nz."""
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(points)}\n"
        + "".join(f"property double {name}\n" for name in ("x", "y", "z", "nx", "ny", "nz"))
        + "end_header\n"
    )
    data = np.ascontiguousarray(np.hstack([points, normals]), dtype="<f8")
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())


def write_synthetic(
    out_dir: str | Path,
    *,
    n: int = 5,
    seed: int = 1,
    n_points: int = 200_000,
    noise_mm: float = 0.5,
    outlier_fraction: float = 0.01,
    floor: bool = False,
    pose: Literal["random"] | None = "random",
    units: Units = Units.MM,
    scan_kind: ScanKind | None = None,
    pair: bool = False,
) -> list[Path]:
    """Write ``n`` random synthetic scans: ``synth_<i>.ply`` and ``synth_<i>.truth.json``.

    The defaults are the spec's accuracy conditions: a random rigid motion,
    0.5 mm noise and 1 % outliers. The JSON holds the truth, the controls,
    the seed of that scan, the pose and the sampling options. With ``pair``,
    each foot is a person's pair instead: ``synth_<i>_left.ply`` and
    ``synth_<i>_right.ply``, one shape on both sides, scanned separately.
    Returns the PLY paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        shape = random_shape(rng, scan_kind=scan_kind)
        sides = [(f"synth_{i}", shape)]
        if pair:
            sides = [(f"synth_{i}_{side.value}", replace(shape, side=side))
                     for side in (Side.LEFT, Side.RIGHT)]
        for name, one in sides:
            paths.append(_write_one(out_dir / f"{name}.ply", one, rng, n_points=n_points,
                                    noise_mm=noise_mm, outlier_fraction=outlier_fraction,
                                    floor=floor, pose=pose, units=units))
    return paths


def _write_one(path: Path, shape: FootShape, rng: np.random.Generator, *, n_points: int,
               noise_mm: float, outlier_fraction: float, floor: bool,
               pose: Literal["random"] | None, units: Units) -> Path:
    """Sample ``shape`` and write its PLY and truth JSON."""
    scan_seed = int(rng.integers(2**31))
    scan = synth_scan(shape, n_points=n_points, noise_mm=noise_mm,
                      outlier_fraction=outlier_fraction, floor=floor, pose=pose,
                      units=units, seed=scan_seed)
    _write_ply(path, scan.points, scan.normals)
    record = {
        "truth": scan.truth,
        "shape": shape.controls(),
        "seed": scan_seed,
        "pose": scan.pose.tolist(),
        "units": units.value,
        "n_points": n_points,
        "noise_mm": noise_mm,
        "outlier_fraction": outlier_fraction,
        "floor": floor,
    }
    path.with_suffix(".truth.json").write_text(json.dumps(record, indent=2) + "\n")
    return path
