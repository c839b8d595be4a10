"""Normal adult ranges shown beside each measurement (reports and tables).

Ranges that are classification thresholds come from the parameters, so a
table never disagrees with the classification beside it.
"""

from __future__ import annotations

from orthocad.params import Params

#: measurement -> (range text, bibliography key), for measurements not classified by parameters
_FIXED = {
    "foot_length_mm": ("220–290 mm (adults)", "hawes_sovak_1994"),
    "ball_width_mm": ("85–110 mm", "hawes_sovak_1994"),
    "heel_width_mm": ("55–75 mm", "hawes_sovak_1994"),
    "truncated_length_mm": ("≈ 72–74 % of foot length", "williams_mcclay_2000"),
    "fifth_met_x_mm": ("≈ 62–66 % of foot length", "hawes_sovak_1994"),
    "dorsal_height_mm": ("55–75 mm", "williams_mcclay_2000"),
    "medial_arch_height_mm": ("10–20 mm", "williams_mcclay_2000"),
    "chippaux_smirak_index": ("0.25–0.45", "forriol_pascual_1990"),
    "staheli_index": ("0.30–1.00", "staheli_1987"),
    "clarke_angle_deg": ("31–45°", "clarke_1933"),
}


def normal_ranges(params: Params) -> dict[str, str]:
    """Range text per measurement name."""
    c = params.classification
    ranges = {name: text for name, (text, _) in _FIXED.items()}
    ranges["arch_index"] = f"{c.arch_index_high:g}–{c.arch_index_low:g}"
    ranges["arch_height_index"] = f"{c.ahi_low:g}–{c.ahi_high:g}"
    ranges["rearfoot_angle_deg"] = f"{c.supinated_deg:+g}° to {c.pronated_deg:+g}°"
    return ranges


def sources() -> dict[str, str]:
    """Bibliography key behind each fixed range."""
    return {name: source for name, (_, source) in _FIXED.items()}
