"""Prescription: one foot's measurements and the clinician's inputs → the device's corrections.

Every field of the device is set by a rule whose numbers are parameters
(:mod:`orthocad.params`), and every rule records a :class:`Decision`: the
field, the value, the rule, the inputs it read, the threshold it crossed and
the published source (a key of ``orthocad/data/bibliography.toml``).

The rules run in dependency order, each reading the final values of the ones
before it::

    rearfoot post → skive → heel cup → arch → cavus & cushioning
    → leg-length lift → metatarsal pad → device length → shell

A field the clinician fixed (an override, ``--set right.rearfoot_post_deg=3``)
replaces the rule's value where that rule runs, so the rules after it build on
the clinician's value (a steeper post deepens the heel cup). The override is
recorded as a decision by the clinician with the value it replaced; it may
exceed a rule's clinical cap (a warning says so) but never the field's hard
limits (:data:`FIELD_LIMITS`).

The rearfoot rules are continuous in the rearfoot angle and start at the
classification thresholds of the parameters given here, so a post is zero
exactly where the heel stops being pronated or supinated. The arch rules act
on ``measurements.classification.arch`` (the measure stage's precedence of
indices decides it); when it is None no arch correction is made and a
decision says why. The arch support's apex sits under the foot's measured
medial arch crest (``medial_arch_apex_x_mm``), at ``arch.apex_pct`` when the
scan does not give it.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

from orthocad import params as params_module
from orthocad._callable import make_callable
from orthocad.enums import ArchType, LldKind, RearfootType, Side
from orthocad.errors import ParameterError

if TYPE_CHECKING:
    from orthocad.measure import Classification, Measurements
    from orthocad.params import Params


class DeviceLength(StrEnum):
    THREE_QUARTER = "three_quarter"  #: ends just proximal to the metatarsal heads
    SULCUS = "sulcus"  #: reaches the sulcus behind the toes
    FULL = "full"


class LiftExtent(StrEnum):
    NONE = "none"
    HEEL = "heel"
    FULL = "full"


#: Hard limits of each numeric field: what a device can physically be. The rules
#: stay inside narrower clinical caps; a clinician may pass a cap, never these.
FIELD_LIMITS: dict[str, tuple[float, float]] = {
    "shell_thickness_mm": (1.0, 8.0),
    "top_cover_mm": (0.0, 6.0),
    "heel_cup_depth_mm": (0.0, 30.0),
    "arch_support_height_mm": (0.0, 60.0),
    "arch_apex_pct": (20.0, 70.0),
    "rearfoot_post_deg": (-12.0, 12.0),
    "forefoot_post_deg": (-12.0, 12.0),
    "medial_skive_mm": (0.0, 8.0),
    "medial_skive_angle_deg": (0.0, 30.0),
    "medial_flange_mm": (0.0, 20.0),
    "lateral_flange_mm": (0.0, 20.0),
    "heel_lift_mm": (0.0, 12.0),
    "met_pad_height_mm": (0.0, 10.0),
    "met_pad_x_pct": (40.0, 90.0),
}
CHOICES: dict[str, type[Enum]] = {"device_length": DeviceLength, "lift_extent": LiftExtent}
SWITCHES = ("first_ray_cutout",)
SOFT_ZONES = ("heel", "midfoot", "forefoot")  #: regions a cushioning hint may name
#: Fields a clinician may fix (the derived shoe_outsole_lift_mm follows from heel_lift_mm).
OVERRIDABLE = (*FIELD_LIMITS, *CHOICES, *SWITCHES, "softer_zones")
LLD_LIMIT_MM = 100.0  # beyond this a discrepancy is a surgical, not an insole, question

_ORDER = (DeviceLength.THREE_QUARTER, DeviceLength.SULCUS, DeviceLength.FULL)
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Decision:
    """Why one field of the device has its value."""

    field: str
    value: Any
    rule: str  #: stable rule id, e.g. ``rearfoot_post.medial``, or "clinician override"
    reason: str  #: the rule applied to this foot, in words
    inputs: dict[str, Any]  #: what the rule read (measurements, parameters, clinician inputs)
    threshold: str | float | None  #: the threshold crossed, if any
    source: str | None  #: bibliography key; None for a clinician's decision (a person, not a paper)
    by: str = "rule"  #: "rule" or "clinician"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Prescription:
    """One foot's device: corrections with units in their names, warnings and decisions."""

    side: Side
    device_length: DeviceLength
    shell_thickness_mm: float
    top_cover_mm: float  #: top-cover thickness allowance
    heel_cup_depth_mm: float
    #: device top at the arch apex, above the support plane; None: follows the scanned sole
    arch_support_height_mm: float | None
    arch_apex_pct: float  #: % of foot length from the heel
    rearfoot_post_deg: float  #: + medial (varus) against pronation, − lateral against supination
    forefoot_post_deg: float  #: + varus / medial, − valgus / lateral
    medial_skive_mm: float
    medial_skive_angle_deg: float
    first_ray_cutout: bool
    medial_flange_mm: float
    lateral_flange_mm: float
    heel_lift_mm: float  #: lift built into the device
    lift_extent: LiftExtent
    shoe_outsole_lift_mm: float  #: lift wanted beyond what the device holds, for the shoe's outsole
    met_pad_height_mm: float
    met_pad_x_pct: float | None  #: pad apex, % of foot length from the heel; None: no pad
    softer_zones: tuple[str, ...]  #: cushioning hint: regions to make softer
    lld_mm: float  #: the clinician's leg-length discrepancy
    lld_short_side: Side | None
    lld_kind: LldKind
    classification: Classification
    warnings: tuple[str, ...]
    decisions: tuple[Decision, ...]

    def __post_init__(self) -> None:
        name = self.side.value
        if (self.heel_lift_mm > 0) != (self.lift_extent is not LiftExtent.NONE):
            raise ParameterError(
                f"{name}: lift_extent = {self.lift_extent.value} with heel_lift_mm = "
                f"{self.heel_lift_mm:g}; a lift needs an extent and an extent a lift: "
                "set both or neither")
        if self.lift_extent is LiftExtent.FULL and self.device_length is not DeviceLength.FULL:
            raise ParameterError(
                f"{name}: a full-length lift needs a full-length device, not "
                f"{self.device_length.value}; set device_length=full or lift_extent=heel")
        if self.heel_lift_mm > 0 and self.lld_mm > 0 and self.lld_short_side is not self.side:
            raise ParameterError(
                f"{name}: heel_lift_mm = {self.heel_lift_mm:g} on the long side (the "
                f"{self.lld_short_side.value} leg is {self.lld_mm:g} mm short) would add to the "
                "discrepancy; lift the short side only, or check short_side")

    def to_dict(self) -> dict[str, Any]:
        """The JSON contract: enums as their values, the classification as ``measure`` gives it."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def to_row(self) -> dict[str, Any]:
        """One flat CSV row: device fields, clinician inputs, classes and warnings."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("classification", "decisions")}
        row["softer_zones"] = "+".join(self.softer_zones)
        row["warnings"] = " | ".join(self.warnings)
        row["arch"] = _plain(self.classification.arch)
        row["rearfoot"] = _plain(self.classification.rearfoot)
        return row


@dataclass(frozen=True)
class Overrides:
    """Overrides split by what they change and which foot; the key ``None`` is both feet."""

    params: Mapping[Side | None, Mapping[str, Any]]  #: ``{"group.field": value}`` per foot
    fields: Mapping[Side | None, Mapping[str, Any]]  #: ``{prescription field: value}`` per foot

    def for_side(self, side: Side) -> tuple[dict[str, Any], dict[str, Any]]:
        """(parameter overrides, field overrides) for one foot; its own win over both feet's."""
        return (
            {**self.params.get(None, {}), **self.params.get(side, {})},
            {**self.fields.get(None, {}), **self.fields.get(side, {})},
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready: ``{"both" | "left" | "right": {key: value}}``, parameters and fields."""
        out: dict[str, dict[str, Any]] = {}
        for mapping in (self.params, self.fields):
            for side, entries in mapping.items():
                out.setdefault(side.value if side else "both", {}).update(
                    {key: _plain(value) for key, value in entries.items()})
        return out


def parse_overrides(items: Iterable[str], *, where: str = "--set") -> Overrides:
    """Parse ``[left.|right.]key=value`` items (``--set``; a manifest's ``;``-joined list).

    ``key`` is a parameter ``group.field`` or a prescription field; a value is
    a TOML scalar (``16``, ``2.5``, ``true``, ``"full"``), a bare word
    (``full``) or, for ``softer_zones``, a TOML list of zone names. A later
    item for the same key wins.
    """
    entries: dict[str, Any] = {}
    for item in items:
        for part in item.split(";"):
            if not part.strip():
                continue
            key, sep, text = part.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ParameterError(
                    f"{where}: {part.strip()!r} is not key=value; write e.g. arch.target_mm=16 "
                    "or right.rearfoot_post_deg=3")
            entries[key] = _parse_value(text.strip(), key=key, where=where)
    return overrides_from_mapping(entries, where=where)


def overrides_from_mapping(mapping: Mapping[str, Any], *, where: str = "overrides") -> Overrides:
    """Split ``{"[side.]key": value}`` (flat, or nested as a case TOML holds it) and check it."""
    known = set(params_module.keys())
    by_side: dict[str, dict[Side | None, dict[str, Any]]] = {"params": {}, "fields": {}}
    for key, value in _flatten(mapping).items():
        side, name = _split_side(key)
        if name in known:
            by_side["params"].setdefault(side, {})[name] = value
        elif name in OVERRIDABLE:
            value = _coerce(name, value, key=key, where=where)
            by_side["fields"].setdefault(side, {})[name] = value
        else:
            raise ParameterError(
                f"{where}: unknown key {key!r}; a key is [left.|right.]PARAMETER or "
                f"[left.|right.]FIELD; parameters: {', '.join(sorted(known))}; "
                f"prescription fields: {', '.join(OVERRIDABLE)}")
    for values in by_side["params"].values():  # refuse a bad value now, before any work
        params_module.with_overrides(params_module.defaults(), values, where=where)
    return Overrides(params=by_side["params"], fields=by_side["fields"])


def prescribe(
    measurements: Measurements,
    *,
    lld_mm: float = 0.0,
    short_side: Side | None = None,
    lld_kind: LldKind = LldKind.STRUCTURAL,
    params: Params | None = None,
    overrides: Overrides | Mapping[str, Any] | None = None,
) -> Prescription:
    """Prescribe one foot's device from its measurements and the clinician's inputs.

    ``lld_mm``, ``short_side`` and ``lld_kind`` describe a leg-length
    discrepancy (a foot scan cannot show one). ``overrides`` are parameter
    and prescription-field overrides (:func:`parse_overrides`, or a mapping in
    the same grammar); those for the other foot are ignored.
    """
    side = measurements.side
    if side not in (Side.LEFT, Side.RIGHT):
        raise ParameterError(
            f"the measurements' side is {side.value!r}; "
            "set the side (left or right) before prescribing")
    _check_lld(lld_mm, short_side, lld_kind)
    if not isinstance(overrides, Overrides):
        overrides = overrides_from_mapping(overrides or {})
    param_overrides, fixed = overrides.for_side(side)
    p = params_module.with_overrides(params or params_module.defaults(), param_overrides)
    chart = _Chart(side=side, fixed=fixed)
    _rearfoot_post(chart, measurements, p)
    _skive(chart, measurements, p)
    _heel_cup(chart, p)
    _arch(chart, measurements, p)
    _cavus(chart, measurements, p)
    _leg_length(chart, p, lld_mm=float(lld_mm), short_side=short_side, kind=lld_kind)
    _met_pad(chart, measurements, p)
    _device_length(chart)
    _shell(chart, p)
    _opposed_classes(chart, measurements.classification)
    return Prescription(
        side=side, **chart.values, lld_mm=float(lld_mm), lld_short_side=short_side,
        lld_kind=lld_kind, classification=measurements.classification,
        warnings=tuple(chart.warnings), decisions=tuple(chart.decisions),
    )


class _Chart:
    """The prescription being written: final values, their decisions and the warnings."""

    def __init__(self, *, side: Side, fixed: Mapping[str, Any]):
        self.side = side
        self.fixed = fixed
        self.values: dict[str, Any] = {}
        self.decisions: list[Decision] = []
        self.warnings: list[str] = []

    def set(
        self, field: str, value: Any, *, rule: str, reason: str, source: str,
        inputs: dict[str, Any], threshold: str | float | None = None,
        cap: tuple[tuple[float, str] | None, tuple[float, str] | None] = (None, None),
    ) -> Any:
        """Record the rule's value, or the clinician's if they fixed the field; return the final."""
        if field not in self.fixed:
            self.values[field] = value
            self.decisions.append(Decision(field, value, rule, reason, inputs, threshold, source))
            return value
        chosen = self.fixed[field]
        self.values[field] = chosen
        self.decisions.append(Decision(
            field, chosen, "clinician override",
            f"set by the clinician; the rule ({reason}) gave {_show(value)}",
            {"rule": rule, "rule_value": value, "rule_source": source}, None, None, by="clinician"))
        low, high = cap  # (limit, parameter) pairs of the rule's clinical range
        passed = high if high and chosen > high[0] else low if low and chosen < low[0] else None
        if passed:
            self.warn(f"{field} = {chosen:g} set by the clinician passes the rule's cap "
                      f"{passed[0]:g} ({passed[1]}); check comfort, fit and stability")
        return chosen

    def warn(self, text: str) -> None:
        self.warnings.append(f"{self.side.value}: {text}")


def _rearfoot_post(chart: _Chart, m: Measurements, p: Params) -> None:
    """Medial post for an everted heel, lateral for an inverted one, continuous in the angle."""
    angle, c = m.rearfoot_angle_deg, p.classification
    cap = ((-p.supinated_post.cap_deg, "supinated_post.cap_deg"),
           (p.rearfoot_post.cap_deg, "rearfoot_post.cap_deg"))
    if angle is None:
        why = m.missing.get("rearfoot_angle_deg", "not measured")
        chart.warn(f"rearfoot angle missing ({why}): no rearfoot post or skive; "
                   "set rearfoot_post_deg if the heel needs one")
        chart.set("rearfoot_post_deg", 0.0, rule="rearfoot_post.missing",
                  reason=f"rearfoot angle missing ({why}): no post", source="rcsp_norms",
                  inputs={"rearfoot_angle_deg": None}, cap=cap)
    elif angle > c.pronated_deg:
        gain, top = p.rearfoot_post.gain, p.rearfoot_post.cap_deg
        post = _dose(gain * (angle - c.pronated_deg), top)
        chart.set("rearfoot_post_deg", post, rule="rearfoot_post.medial",
                  reason=f"heel everted {angle:+.1f}° > {c.pronated_deg:+g}°: medial post = "
                         f"clamp({gain:g} × ({angle:.1f} − {c.pronated_deg:g}), 0, {top:g})",
                  source="root_1977", threshold=f"rearfoot_angle_deg > {c.pronated_deg:g}",
                  inputs={"rearfoot_angle_deg": angle,
                          "classification.pronated_deg": c.pronated_deg,
                          "rearfoot_post.gain": gain, "rearfoot_post.cap_deg": top}, cap=cap)
    elif angle < c.supinated_deg:
        gain, top = p.supinated_post.gain, p.supinated_post.cap_deg
        post = 0.0 - _dose(gain * (c.supinated_deg - angle), top)
        chart.set("rearfoot_post_deg", post, rule="rearfoot_post.lateral",
                  reason=f"heel inverted {angle:+.1f}° < {c.supinated_deg:+g}°: lateral post = "
                         f"−clamp({gain:g} × ({c.supinated_deg:g} − {angle:.1f}), 0, {top:g})",
                  source="telfer_2013", threshold=f"rearfoot_angle_deg < {c.supinated_deg:g}",
                  inputs={"rearfoot_angle_deg": angle,
                          "classification.supinated_deg": c.supinated_deg,
                          "supinated_post.gain": gain, "supinated_post.cap_deg": top}, cap=cap)
    else:
        chart.set("rearfoot_post_deg", 0.0, rule="rearfoot_post.neutral",
                  reason=f"heel {angle:+.1f}° within "
                         f"{c.supinated_deg:+g}°..{c.pronated_deg:+g}°: no post",
                  source="rcsp_norms",
                  threshold=f"{c.supinated_deg:g} ≤ rearfoot_angle_deg ≤ {c.pronated_deg:g}",
                  inputs={"rearfoot_angle_deg": angle,
                          "classification.pronated_deg": c.pronated_deg,
                          "classification.supinated_deg": c.supinated_deg}, cap=cap)


def _skive(chart: _Chart, m: Measurements, p: Params) -> None:
    """Kirby medial heel skive for severe eversion, continuous in the angle from start_deg."""
    angle, s = m.rearfoot_angle_deg, p.skive
    inputs = {"rearfoot_angle_deg": angle, "skive.start_deg": s.start_deg,
              "skive.gain_mm_per_deg": s.gain_mm_per_deg, "skive.cap_mm": s.cap_mm}
    if angle is None:
        depth, rule, reason = 0.0, "skive.missing", "rearfoot angle missing: no skive"
    else:
        depth = _dose(s.gain_mm_per_deg * (angle - s.start_deg), s.cap_mm)
        rule = "skive.medial" if depth > 0 else "skive.none"
        reason = (f"rearfoot angle {angle:+.1f}°: skive = clamp({s.gain_mm_per_deg:g} × "
                  f"({angle:.1f} − {s.start_deg:g}), 0, {s.cap_mm:g}) mm")
    depth = chart.set("medial_skive_mm", depth, rule=rule, reason=reason, source="kirby_1992",
                      threshold=f"rearfoot_angle_deg > {s.start_deg:g}", inputs=inputs,
                      cap=(None, (s.cap_mm, "skive.cap_mm")))
    if depth > 0:
        chart.set("medial_skive_angle_deg", s.angle_deg, rule="skive.angle",
                  reason=f"skive plane at {s.angle_deg:g}°", source="kirby_1992",
                  inputs={"medial_skive_mm": depth, "skive.angle_deg": s.angle_deg})
    else:
        chart.set("medial_skive_angle_deg", 0.0, rule="skive.angle",
                  reason="no skive, no skive angle", source="kirby_1992",
                  inputs={"medial_skive_mm": depth})


def _heel_cup(chart: _Chart, p: Params) -> None:
    """Huppin: 12 mm standard, ≥ 14 with a skive, 20–22 when skive (mm) + post (°) > 5."""
    h = p.heel_cup
    skive, post = chart.values["medial_skive_mm"], chart.values["rearfoot_post_deg"]
    # Huppin's sum is skive + varus inversion: only a medial (positive) post adds to it.
    total = skive + max(post, 0.0)
    inputs = {"medial_skive_mm": skive, "rearfoot_post_deg": post,
              "heel_cup.deep_above": h.deep_above}
    if total > h.deep_above:
        depth, rule = h.deep_mm, "heel_cup.deep"
        reason = (f"skive {skive:g} mm + medial post {max(post, 0.0):g}° = {total:g} > "
                  f"{h.deep_above:g}: deep cup")
        inputs["heel_cup.deep_mm"] = h.deep_mm
    elif skive > 0:
        depth, rule = h.with_skive_mm, "heel_cup.skive"
        reason = f"a {skive:g} mm skive needs at least {h.with_skive_mm:g} mm of heel cup"
        inputs["heel_cup.with_skive_mm"] = h.with_skive_mm
    else:
        depth, rule = h.standard_mm, "heel_cup.standard"
        reason = f"no skive and skive + post = {total:g} ≤ {h.deep_above:g}: standard cup"
        inputs["heel_cup.standard_mm"] = h.standard_mm
    chart.set("heel_cup_depth_mm", depth, rule=rule, reason=reason, source="huppin_heel_cup",
              threshold=f"skive_mm + post_deg > {h.deep_above:g}", inputs=inputs)


def _arch(chart: _Chart, m: Measurements, p: Params) -> None:
    """Total contact; a low arch's support raised toward the target, capped above the sole."""
    a, c, scanned = p.arch, m.classification, m.medial_arch_height_mm
    _arch_apex(chart, m, p)
    inputs = {"arch": _plain(c.arch), "arch_driver": c.arch_driver, "arch_reason": c.arch_reason,
              "arch_conflict": c.arch_conflict, "medial_arch_height_mm": scanned}
    if c.arch is ArchType.LOW:
        inputs |= {"arch.target_mm": a.target_mm, "arch.comfort_cap_mm": a.comfort_cap_mm}
        cap = (None, None if scanned is None else (
            scanned + a.comfort_cap_mm, "arch.comfort_cap_mm above the scanned sole"))
        if scanned is None:
            why = m.missing.get("medial_arch_height_mm", "not measured")
            chart.warn(f"low arch but the medial arch height is missing ({why}): the support "
                       "follows the scanned sole; set arch_support_height_mm to raise it")
            height, rule = None, "arch.low_unmeasured"
            reason = f"low arch ({c.arch_reason}), arch height missing: follows the scan"
        else:
            rise = _dose(a.target_mm - scanned, a.comfort_cap_mm)
            height, rule = scanned + rise, "arch.low_raise"
            reason = (f"low arch ({c.arch_reason}): support raised {rise:.1f} mm from the "
                      f"scanned {scanned:.1f} mm toward {a.target_mm:g} mm, at most "
                      f"{a.comfort_cap_mm:g} mm above the sole")
        chart.set("arch_support_height_mm", height, rule=rule, reason=reason, source="peng_2022",
                  threshold=f"rise ≤ {a.comfort_cap_mm:g} mm", inputs=inputs, cap=cap)
        chart.set("medial_flange_mm", a.medial_flange_mm, rule="arch.medial_flange",
                  reason=f"low arch: {a.medial_flange_mm:g} mm medial flange for medial control",
                  source="banwell_2014",
                  inputs={"arch": "low", "arch.medial_flange_mm": a.medial_flange_mm})
        return
    if c.arch is None:
        chart.warn(f"arch not classified ({c.arch_reason}): no arch correction; "
                   "set arch_support_height_mm or medial_flange_mm if one is needed")
        reason = f"arch not classified ({c.arch_reason}): total contact, no arch correction"
    else:
        reason = f"{c.arch.value} arch ({c.arch_reason}): total contact, follows the scanned sole"
    height = scanned  # total contact: exactly the scanned sole
    source = "burns_2006" if c.arch is ArchType.HIGH else "michaud_1993"
    chart.set("arch_support_height_mm", height, rule="arch.total_contact", reason=reason,
              source=source, inputs=inputs)
    chart.set("medial_flange_mm", 0.0, rule="arch.no_flange",
              reason="no medial flange: the arch is not low", source="banwell_2014",
              inputs={"arch": _plain(c.arch)})


def _arch_apex(chart: _Chart, m: Measurements, p: Params) -> None:
    """The support's apex under the foot's own medial arch crest, else the parameter's."""
    apex, length, default = m.medial_arch_apex_x_mm, m.foot_length_mm, p.arch.apex_pct
    inputs = {"medial_arch_apex_x_mm": apex, "foot_length_mm": length, "arch.apex_pct": default}
    if apex is not None and length:
        low, high = FIELD_LIMITS["arch_apex_pct"]
        pct = _clamp(_r(100.0 * apex / length), low, high)
        chart.set("arch_apex_pct", pct, rule="arch.apex_measured",
                  reason=f"apex under the measured medial arch crest: {apex:.1f} mm of "
                         f"{length:.1f} mm = {pct:g} %FL", source="michaud_1993", inputs=inputs)
        return
    why = (m.missing.get("medial_arch_apex_x_mm") or m.missing.get("foot_length_mm")
           or "not measured")
    chart.set("arch_apex_pct", default, rule="arch.apex_default",
              reason=f"medial arch apex missing ({why}): {default:g} %FL, the middle of the "
                     "footprint's midfoot third", source="cavanagh_rodgers_1987", inputs=inputs)


def _cavus(chart: _Chart, m: Measurements, p: Params) -> None:
    """High arch: lateral forefoot post, first-ray cut-out, lateral flange, cushioning."""
    cv, arch = p.cavus, m.classification.arch
    inputs = {"arch": _plain(arch)}
    if arch is ArchType.HIGH:
        chart.set("forefoot_post_deg", _r(-cv.forefoot_post_deg), rule="cavus.forefoot_post",
                  reason=f"high arch: {cv.forefoot_post_deg:g}° lateral (valgus) forefoot post "
                         "for the plantarflexed first ray",
                  source="manoli_graham_2005",
                  inputs=inputs | {"cavus.forefoot_post_deg": cv.forefoot_post_deg})
        chart.set("first_ray_cutout", cv.first_ray_cutout, rule="cavus.first_ray_cutout",
                  reason="high arch: recess under the first metatarsal head"
                         if cv.first_ray_cutout else "high arch: cut-out switched off",
                  source="manoli_graham_2005",
                  inputs=inputs | {"cavus.first_ray_cutout": cv.first_ray_cutout})
        chart.set("lateral_flange_mm", cv.lateral_flange_mm, rule="cavus.lateral_flange",
                  reason=f"high arch: {cv.lateral_flange_mm:g} mm lateral flange",
                  source="lopiccolo_2010",
                  inputs=inputs | {"cavus.lateral_flange_mm": cv.lateral_flange_mm})
        chart.set("top_cover_mm", cv.top_cover_mm, rule="cavus.cushioning",
                  reason=f"rigid high arch absorbs shock badly: {cv.top_cover_mm:g} mm top cover",
                  source="burns_2005", inputs=inputs | {"cavus.top_cover_mm": cv.top_cover_mm})
        chart.set("softer_zones", ("heel", "forefoot"), rule="cavus.cushioning",
                  reason="high arch: peak pressures at the heel and forefoot, make them softer",
                  source="burns_2005", inputs=inputs)
        return
    why = "the arch is not high" if arch is not None else "the arch is not classified"
    chart.set("forefoot_post_deg", 0.0, rule="forefoot_post.none",
              reason=f"no forefoot post: {why}", source="manoli_graham_2005", inputs=inputs)
    chart.set("first_ray_cutout", False, rule="cavus.no_cutout",
              reason=f"no first-ray cut-out: {why}", source="manoli_graham_2005", inputs=inputs)
    chart.set("lateral_flange_mm", 0.0, rule="cavus.no_flange",
              reason=f"no lateral flange: {why}", source="lopiccolo_2010", inputs=inputs)
    top = p.device.top_cover_mm
    chart.set("top_cover_mm", top, rule="device.top_cover",
              reason=f"standard {top:g} mm top cover", source="michaud_1993",
              inputs={"device.top_cover_mm": top})
    chart.set("softer_zones", (), rule="cushioning.none",
              reason=f"no cushioning hint: {why}", source="burns_2005", inputs=inputs)


def _leg_length(chart: _Chart, p: Params, *, lld_mm: float, short_side: Side | None,
                kind: LldKind) -> None:
    """A partial lift on the short side, capped in the device, the rest on the shoe's outsole."""
    lp, side = p.lld, chart.side
    inputs = {"lld_mm": lld_mm, "short_side": _plain(short_side), "lld_kind": kind.value,
              "lld.threshold_mm": lp.threshold_mm, "lld.device_cap_mm": lp.device_cap_mm}
    wanted, threshold = 0.0, f"lld_mm ≥ {lp.threshold_mm:g}"
    if lld_mm == 0:
        rule, source, reason = "lld.none", "gurney_2002", "no leg-length discrepancy entered"
    elif short_side is not side:
        rule, source = "lld.long_side", "brady_2003"
        reason = f"the {short_side.value} leg is short: a lift goes on the short side only"
    elif lld_mm < lp.threshold_mm:
        rule, source = "lld.below_threshold", "gurney_2002"
        reason = f"discrepancy {lld_mm:g} mm < {lp.threshold_mm:g} mm: no lift"
    elif kind is LldKind.FUNCTIONAL:
        wanted = _r(lp.functional_fraction * lld_mm)
        rule, source = "lld.functional", "knutson_2005"
        inputs["lld.functional_fraction"] = lp.functional_fraction
        reason = (f"functional discrepancy {lld_mm:g} mm: lift {lp.functional_fraction:g} × "
                  f"{lld_mm:g} = {wanted:g} mm")
        chart.warn(f"functional leg-length discrepancy of {lld_mm:g} mm ({side.value} short): "
                   f"{'no lift' if wanted == 0 else f'{wanted:g} mm lift'}; treat the cause "
                   "(pelvic obliquity, muscle tightness, joint contracture) and re-measure")
    else:
        wanted = _r(lp.fraction * lld_mm)
        rule, source = "lld.structural", "brady_2003"
        inputs["lld.fraction"] = lp.fraction
        reason = (f"structural discrepancy {lld_mm:g} mm, {side.value} short: lift "
                  f"{lp.fraction:g} × {lld_mm:g} = {wanted:g} mm, at most {lp.device_cap_mm:g} mm "
                  "in the device")
    lift = chart.set("heel_lift_mm", min(wanted, lp.device_cap_mm), rule=rule, reason=reason,
                     source=source, threshold=threshold, inputs=inputs,
                     cap=(None, (lp.device_cap_mm, "lld.device_cap_mm")))
    total = max(wanted, lift)
    extent_inputs = {"heel_lift_mm": lift, "wanted_lift_mm": wanted,
                     "lld.full_length_above_mm": lp.full_length_above_mm}
    if lift == 0:
        extent, reason = LiftExtent.NONE, "no lift"
    elif total > lp.full_length_above_mm:
        extent = LiftExtent.FULL
        reason = f"lift {total:g} mm > {lp.full_length_above_mm:g} mm: full length, not heel-only"
    else:
        extent = LiftExtent.HEEL
        reason = f"lift {total:g} mm ≤ {lp.full_length_above_mm:g} mm: heel lift"
    extent = chart.set("lift_extent", extent, rule="lld.extent", reason=reason,
                       source="gurney_2002", threshold=f"lift > {lp.full_length_above_mm:g} mm",
                       inputs=extent_inputs)
    rest = round(max(wanted - lift, 0.0), 3)  # 3 decimals: a cap need not be a 0.1 multiple
    chart.set("shoe_outsole_lift_mm", rest, rule="lld.outsole",
              reason=f"{wanted:g} mm wanted − {lift:g} mm in the device", source="brady_2003",
              inputs={"wanted_lift_mm": wanted, "heel_lift_mm": lift})
    if rest > 0:
        where = "full length" if extent is LiftExtent.FULL else "at the heel"
        chart.warn(f"{wanted:g} mm of lift wanted for the {lld_mm:g} mm discrepancy, "
                   f"{lift:g} mm fit in the device: add {rest:g} mm to the {side.value} "
                   f"shoe's outsole ({where})")


def _met_pad(chart: _Chart, m: Measurements, p: Params) -> None:
    """An optional pad just proximal to the first metatarsal head line."""
    mp = p.met_pad
    height = chart.set(
        "met_pad_height_mm", mp.height_mm, rule="met_pad.height",
        reason=f"{mp.height_mm:g} mm pad" if mp.height_mm > 0 else "no metatarsal pad asked for",
        source="kang_2006", inputs={"met_pad.height_mm": mp.height_mm})
    mth, length = m.truncated_length_mm, m.foot_length_mm
    inputs = {"truncated_length_mm": mth, "foot_length_mm": length,
              "met_pad.behind_mth_mm": mp.behind_mth_mm}
    if height == 0:
        x, reason = None, "no pad, no position"
    elif mth is None or length is None:
        why = (m.missing.get("truncated_length_mm")
               or m.missing.get("foot_length_mm", "not measured"))
        chart.warn(f"a metatarsal pad is asked for but the first metatarsal head was not found "
                   f"({why}): set met_pad_x_pct by hand")
        x, reason = None, "first metatarsal head missing: no position"
    else:
        x = _r(100.0 * (mth - mp.behind_mth_mm) / length)
        reason = (f"pad apex {mp.behind_mth_mm:g} mm proximal to the first metatarsal head "
                  f"({mth:.1f} mm of {length:.1f} mm)")
    chart.set("met_pad_x_pct", x, rule="met_pad.position", reason=reason, source="hsi_2005",
              inputs=inputs)


def _device_length(chart: _Chart) -> None:
    """Three-quarter by default; forefoot features need sulcus length, a full lift full length."""
    v = chart.values
    needs = [(DeviceLength.THREE_QUARTER, "a functional device ends behind the metatarsal heads",
              "root_1977")]
    if v["forefoot_post_deg"] != 0:
        needs.append((DeviceLength.SULCUS, "the forefoot post must reach under the metatarsal "
                      "heads", "manoli_graham_2005"))
    if v["first_ray_cutout"]:
        needs.append((DeviceLength.SULCUS, "the first-ray cut-out lies under the first metatarsal "
                      "head", "manoli_graham_2005"))
    if v["met_pad_height_mm"] > 0:
        needs.append((DeviceLength.SULCUS, "the metatarsal pad needs the device under the "
                      "metatarsal heads", "hsi_2005"))
    if v["lift_extent"] is LiftExtent.FULL:
        needs.append((DeviceLength.FULL, "a full-length lift", "gurney_2002"))
    length = max((need[0] for need in needs), key=_ORDER.index)
    deciding = [need for need in needs if need[0] is length]
    chart.set("device_length", length, rule="device.length",
              reason=f"{length.value}: " + "; ".join(need[1] for need in deciding),
              source=deciding[0][2],
              inputs={"forefoot_post_deg": v["forefoot_post_deg"],
                      "first_ray_cutout": v["first_ray_cutout"],
                      "met_pad_height_mm": v["met_pad_height_mm"],
                      "lift_extent": v["lift_extent"].value})


def _shell(chart: _Chart, p: Params) -> None:
    shell = p.device.shell_thickness_mm
    chart.set("shell_thickness_mm", shell, rule="device.shell",
              reason=f"{shell:g} mm printed shell", source="pallari_2010",
              inputs={"device.shell_thickness_mm": shell})


def _opposed_classes(chart: _Chart, c: Classification) -> None:
    """Say so when arch and heel point opposite ways: each drives its own correction."""
    if (c.arch, c.rearfoot) in ((ArchType.LOW, RearfootType.SUPINATED),
                                (ArchType.HIGH, RearfootType.PRONATED)):
        chart.warn(f"{c.arch.value} arch with a {c.rearfoot.value} heel is an unusual pair; each "
                   "drives its own correction: confirm the heel alignment clinically")


def _check_lld(lld_mm: float, short_side: Side | None, kind: LldKind) -> None:
    if not isinstance(kind, LldKind):
        raise ParameterError(f"lld_kind {kind!r} is not one of: structural, functional")
    if not math.isfinite(lld_mm) or not 0.0 <= lld_mm <= LLD_LIMIT_MM:
        raise ParameterError(f"lld_mm = {lld_mm!r} is outside 0..{LLD_LIMIT_MM:g} mm; "
                             "give the discrepancy in millimetres")
    if short_side is not None and short_side not in (Side.LEFT, Side.RIGHT):
        raise ParameterError(f"short_side {short_side!r} must be left or right")
    if lld_mm > 0 and short_side is None:
        raise ParameterError(f"a {lld_mm:g} mm leg-length discrepancy needs the short side; "
                             "give short_side left or right")


def _parse_value(text: str, *, key: str, where: str) -> Any:
    """A TOML scalar, a bare word, or a TOML list of words."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.fullmatch(text):
            return text
        raise ParameterError(f"{where}: {key}={text!r} is not a value; give a number, true/false, "
                             "a word or a list such as [\"heel\"]") from None
    if isinstance(value, bool | int | float | str) or (
            isinstance(value, list) and all(isinstance(item, str) for item in value)):
        return value
    raise ParameterError(f"{where}: {key}={text!r} is a {type(value).__name__}; give a number, "
                         "true/false or a word")


def _coerce(name: str, value: Any, *, key: str, where: str) -> Any:
    """A clinician's value for a prescription field, checked against the field's hard limits."""
    if name in FIELD_LIMITS:
        low, high = FIELD_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterError(f"{where}: {key} = {value!r} is not a number; "
                                 f"give a number in {low:g}..{high:g}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ParameterError(f"{where}: {key} = {value!r} is outside the device's limits "
                                 f"{low:g}..{high:g}; choose a value in that range")
        return float(value)
    if name in CHOICES:
        allowed = [choice.value for choice in CHOICES[name]]
        if value not in allowed:
            raise ParameterError(f"{where}: {key} = {value!r} is not allowed; "
                                 f"choose one of: {', '.join(allowed)}")
        return CHOICES[name](value)
    if name in SWITCHES:
        if not isinstance(value, bool):
            raise ParameterError(f"{where}: {key} = {value!r} is not a switch; "
                                 "give true or false")
        return value
    zones = [value] if isinstance(value, str) else value
    if not isinstance(zones, list | tuple) or not set(zones) <= set(SOFT_ZONES):
        raise ParameterError(f"{where}: {key} = {value!r} is not a list of zones; "
                             f"give some of: {', '.join(SOFT_ZONES)}, e.g. [\"heel\"]")
    return tuple(zones)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _split_side(key: str) -> tuple[Side | None, str]:
    head, _, rest = key.partition(".")
    if head in (Side.LEFT.value, Side.RIGHT.value) and rest:
        return Side(head), rest
    return None, key


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def _dose(value: float, cap: float) -> float:
    """A correction rounded to 0.1 and kept in 0..cap: rounding never passes a cap."""
    return _clamp(_r(value), 0.0, cap)


def _r(value: float) -> float:
    """Round to 0.1 (mm or degrees: what a device is made to); + 0.0 turns −0.0 into 0.0."""
    return round(value, 1) + 0.0


def _plain(value: Any) -> Any:
    """JSON-ready: enums as their values, tuples as lists, results as their ``to_dict()``."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _show(value: Any) -> str:
    value = _plain(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


make_callable(__name__, "prescribe")
