"""Prescription rules: tables of feet → devices, properties, the LLD example, overrides, the
arch apex, and end to end: synthetic feet of known type, the real scans, a foam box, the CLI."""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from orthocad import params, pipeline, scan, synthetic
from orthocad.cli import main
from orthocad.enums import ArchType, Loading, RearfootType, ScanKind, Side
from orthocad.errors import ParameterError
from orthocad.measure import Classification, Measurements, classify
from orthocad.prescribe import (
    FIELD_LIMITS,
    OVERRIDABLE,
    DeviceLength,
    LiftExtent,
    LldKind,
    Overrides,
    Prescription,
    overrides_from_mapping,
    parse_overrides,
    prescribe,
)
from orthocad.synthetic import FootShape

SCANS = Path(__file__).resolve().parents[1] / "scans"
DEVICE_FIELDS = {f.name for f in fields(Prescription)} - {
    "side", "lld_mm", "lld_short_side", "lld_kind", "classification", "warnings", "decisions"}
NOT_APPLICABLE = "footprint indices do not apply to a foam_box scan and a plantar scan has no AHI"


def foot(*, side: Side = Side.RIGHT, angle: float | None = 2.0,
         arch: ArchType | None = ArchType.NORMAL, arch_height: float | None = 14.0,
         length: float = 260.0, mth1: float | None = 190.0, apex: float | None = None,
         missing: dict[str, str] | None = None) -> Measurements:
    """A 260 mm adult foot with the classes the default thresholds give its rearfoot angle."""
    c = params.defaults().classification
    if angle is None:
        rearfoot = None
    elif angle > c.pronated_deg:
        rearfoot = RearfootType.PRONATED
    elif angle < c.supinated_deg:
        rearfoot = RearfootType.SUPINATED
    else:
        rearfoot = RearfootType.NEUTRAL
    classification = Classification(
        arch=arch, arch_driver=None if arch is None else "arch_index",
        arch_reason=NOT_APPLICABLE if arch is None else f"arch index says {arch.value}",
        arch_conflict=None, rearfoot=rearfoot,
        rearfoot_driver=None if angle is None else "rearfoot_angle_deg",
        rearfoot_reason="rearfoot angle missing" if angle is None else f"angle {angle:+.1f}°",
    )
    return Measurements(
        side=side, scan_kind=ScanKind.FULL, loading=Loading.WEIGHT_BEARING,
        foot_length_mm=length, ball_width_mm=98.0, heel_width_mm=64.0, truncated_length_mm=mth1,
        fifth_met_x_mm=165.0, dorsal_height_mm=64.0, arch_height_index=0.34,
        medial_arch_height_mm=arch_height, arch_index=0.23, rearfoot_angle_deg=angle,
        chippaux_smirak_index=0.35, staheli_index=0.7, clarke_angle_deg=42.0,
        classification=classification, medial_arch_apex_x_mm=apex, missing=missing or {},
    )


def decision(rx: Prescription, field: str):
    [found] = [d for d in rx.decisions if d.field == field]
    return found


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(ParameterError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


NEUTRAL = dict(
    device_length=DeviceLength.THREE_QUARTER, shell_thickness_mm=3.0, top_cover_mm=1.5,
    heel_cup_depth_mm=12.0, arch_support_height_mm=14.0, arch_apex_pct=40.0,
    rearfoot_post_deg=0.0, forefoot_post_deg=0.0, medial_skive_mm=0.0, medial_skive_angle_deg=0.0,
    first_ray_cutout=False, medial_flange_mm=0.0, lateral_flange_mm=0.0, heel_lift_mm=0.0,
    lift_extent=LiftExtent.NONE, shoe_outsole_lift_mm=0.0, met_pad_height_mm=0.0,
    met_pad_x_pct=None, softer_zones=(),
)
CAVUS = dict(forefoot_post_deg=-4.0, first_ray_cutout=True, lateral_flange_mm=8.0,
             top_cover_mm=3.0, softer_zones=("heel", "forefoot"), device_length=DeviceLength.SULCUS)
OPPOSED = "unusual pair"

# (foot, fields that differ from the neutral device, warning fragments)
TABLE = {
    "neutral foot: total contact, no posting": (
        dict(angle=2.0), {}, []),
    "typical pronator, low arch: 4° post, arch raised by the comfort cap, medial flange": (
        dict(angle=8.0, arch=ArchType.LOW, arch_height=6.0),
        dict(rearfoot_post_deg=4.0, arch_support_height_mm=11.0, medial_flange_mm=10.0), []),
    "low arch near the target: raised only to the target": (
        dict(angle=3.0, arch=ArchType.LOW, arch_height=13.0),
        dict(arch_support_height_mm=15.0, medial_flange_mm=10.0), []),
    "mild skive: at least 14 mm of heel cup": (
        dict(angle=8.5),
        dict(rearfoot_post_deg=4.5, medial_skive_mm=0.5, medial_skive_angle_deg=20.0,
             heel_cup_depth_mm=14.0), []),
    "severe eversion, low arch: capped post, skive, deep heel cup (Huppin)": (
        dict(angle=12.0, arch=ArchType.LOW, arch_height=4.0),
        dict(rearfoot_post_deg=8.0, medial_skive_mm=4.0, medial_skive_angle_deg=20.0,
             heel_cup_depth_mm=20.0, arch_support_height_mm=9.0, medial_flange_mm=10.0), []),
    "extreme eversion: post and skive at their caps": (
        dict(angle=20.0),
        dict(rearfoot_post_deg=8.0, medial_skive_mm=6.0, medial_skive_angle_deg=20.0,
             heel_cup_depth_mm=20.0), []),
    "supinated heel: lateral post only": (
        dict(angle=-5.0), dict(rearfoot_post_deg=-3.0), []),
    "strongly inverted heel: lateral post capped": (
        dict(angle=-12.0), dict(rearfoot_post_deg=-6.0), []),
    "cavus, neutral heel: total contact, valgus forefoot post, cut-out, flange, cushioning": (
        dict(angle=0.0, arch=ArchType.HIGH, arch_height=24.0),
        dict(CAVUS, arch_support_height_mm=24.0), []),
    "cavus with an inverted heel: lateral rearfoot and forefoot posts": (
        dict(angle=-6.0, arch=ArchType.HIGH, arch_height=24.0),
        dict(CAVUS, arch_support_height_mm=24.0, rearfoot_post_deg=-4.0), []),
    "mixed: cavus with a pronated heel: medial rearfoot post, valgus forefoot post": (
        dict(angle=7.0, arch=ArchType.HIGH, arch_height=21.0),
        dict(CAVUS, arch_support_height_mm=21.0, rearfoot_post_deg=3.0), [OPPOSED]),
    "mixed: low arch with an inverted heel: arch support and a lateral post": (
        dict(angle=-4.0, arch=ArchType.LOW, arch_height=6.0),
        dict(rearfoot_post_deg=-2.0, arch_support_height_mm=11.0, medial_flange_mm=10.0),
        [OPPOSED]),
    "arch not classified (foam box): no arch correction, said why": (
        dict(arch=None), {}, ["arch not classified", NOT_APPLICABLE]),
    "rearfoot angle missing: no post or skive, said why": (
        dict(angle=None, missing={"rearfoot_angle_deg": "the heel surface reaches 20 mm"}),
        {}, ["rearfoot angle missing", "reaches 20 mm"]),
    "low arch without an arch height: follows the scan, said why": (
        dict(arch=ArchType.LOW, arch_height=None,
             missing={"medial_arch_height_mm": "no plantar surface"}),
        dict(arch_support_height_mm=None, medial_flange_mm=10.0),
        ["medial arch height is missing", "no plantar surface"]),
}


@pytest.mark.parametrize("case", TABLE, ids=list(TABLE))
def test_rule_table(case):
    measurements, changed, warned = TABLE[case]
    rx = prescribe(foot(**measurements))
    expected = NEUTRAL | changed
    assert {name: getattr(rx, name) for name in expected} == expected
    for fragment in warned:
        assert any(fragment in w for w in rx.warnings), (fragment, rx.warnings)
    if not warned:
        assert rx.warnings == ()


def test_a_post_alone_above_huppins_sum_deepens_the_heel_cup():
    rx = prescribe(foot(angle=9.5), overrides={"skive.start_deg": 12})
    assert (rx.rearfoot_post_deg, rx.medial_skive_mm, rx.heel_cup_depth_mm) == (5.5, 0.0, 20.0)
    assert decision(rx, "heel_cup_depth_mm").rule == "heel_cup.deep"


def test_a_neutral_foot_gets_a_neutral_decision_for_every_field():
    rx = prescribe(foot(angle=1.0))
    assert decision(rx, "rearfoot_post_deg").rule == "rearfoot_post.neutral"
    assert decision(rx, "arch_support_height_mm").rule == "arch.total_contact"


def test_not_applicable_arch_class_is_a_decision_saying_why():
    rx = prescribe(foot(arch=None))
    d = decision(rx, "arch_support_height_mm")
    assert "not classified" in d.reason and NOT_APPLICABLE in d.reason
    assert d.inputs["arch"] is None and d.inputs["arch_reason"] == NOT_APPLICABLE


def test_every_field_has_exactly_one_decision_with_a_resolvable_source():
    bibliography = params.bibliography()
    for measurements, _, _ in TABLE.values():
        rx = prescribe(foot(**measurements), lld_mm=12.0, short_side=Side.RIGHT)
        assert sorted(d.field for d in rx.decisions) == sorted(DEVICE_FIELDS)
        for d in rx.decisions:
            assert d.by == "rule" and d.source in bibliography, (d.field, d.source)
            assert getattr(rx, d.field) == d.value


def test_decisions_record_the_rule_its_inputs_and_the_threshold():
    d = decision(prescribe(foot(angle=8.0)), "rearfoot_post_deg")
    assert (d.rule, d.value, d.source) == ("rearfoot_post.medial", 4.0, "root_1977")
    assert d.inputs == {"rearfoot_angle_deg": 8.0, "classification.pronated_deg": 4.0,
                        "rearfoot_post.gain": 1.0, "rearfoot_post.cap_deg": 8.0}
    assert d.threshold == "rearfoot_angle_deg > 4"
    assert "clamp(1 × (8.0 − 4), 0, 8)" in d.reason


def test_json_contract():
    rx = prescribe(foot(angle=9.0, arch=ArchType.HIGH, arch_height=22.0), lld_mm=15.0,
                   short_side=Side.RIGHT)
    out = json.loads(json.dumps(rx.to_dict()))
    for key in ("side", "device_length", "shell_thickness_mm", "top_cover_mm", "heel_cup_depth_mm",
                "arch_support_height_mm", "arch_apex_pct", "rearfoot_post_deg", "forefoot_post_deg",
                "medial_skive_mm", "medial_skive_angle_deg", "first_ray_cutout", "medial_flange_mm",
                "lateral_flange_mm", "heel_lift_mm", "lift_extent", "met_pad_height_mm",
                "met_pad_x_pct", "warnings", "decisions", "classification"):
        assert key in out, key
    assert (out["side"], out["device_length"], out["lift_extent"]) == ("right", "sulcus", "heel")
    assert out["classification"] == rx.classification.to_dict()
    assert (out["classification"]["arch"], out["classification"]["rearfoot"]) == (
        "high", "pronated")
    assert out["softer_zones"] == ["heel", "forefoot"]
    for d in out["decisions"]:
        assert {"field", "value", "rule", "inputs", "threshold", "source"} <= set(d)
    assert isinstance(out["warnings"], list) and out["warnings"]


def test_csv_row_is_flat():
    row = prescribe(foot(angle=-5.0, arch=ArchType.HIGH)).to_row()
    assert all(not isinstance(v, dict | list | tuple) for v in row.values())
    assert (row["softer_zones"], row["arch"], row["rearfoot"]) == (
        "heel+forefoot", "high", "supinated")


def test_prescribe_is_pure():
    measurements = foot(angle=11.0, arch=ArchType.LOW, arch_height=5.0)
    before = replace(measurements)
    assert prescribe(measurements) == prescribe(measurements)
    assert measurements == before


# --- leg-length discrepancy: the worked example and its rules ---

@pytest.mark.parametrize(("lld_mm", "lift", "extent", "outsole", "device"), [
    (10.0, 6.0, LiftExtent.HEEL, 0.0, DeviceLength.THREE_QUARTER),  # the worked example
    (15.0, 6.0, LiftExtent.HEEL, 3.0, DeviceLength.THREE_QUARTER),  # 9 wanted, 6 in the device
    (20.0, 6.0, LiftExtent.FULL, 6.0, DeviceLength.FULL),  # 12 wanted > 10: full length
    (5.0, 3.0, LiftExtent.HEEL, 0.0, DeviceLength.THREE_QUARTER),
])
def test_structural_lld_lifts_the_short_side(lld_mm, lift, extent, outsole, device):
    left = prescribe(foot(side=Side.LEFT), lld_mm=lld_mm, short_side=Side.LEFT)
    right = prescribe(foot(side=Side.RIGHT), lld_mm=lld_mm, short_side=Side.LEFT)
    assert (left.heel_lift_mm, left.lift_extent, left.shoe_outsole_lift_mm, left.device_length) == (
        lift, extent, outsole, device)
    assert (right.heel_lift_mm, right.lift_extent, right.warnings) == (0.0, LiftExtent.NONE, ())
    assert decision(right, "heel_lift_mm").rule == "lld.long_side"


def test_worked_example_10_mm_has_no_warning():
    rx = prescribe(foot(side=Side.LEFT), lld_mm=10.0, short_side=Side.LEFT)
    assert rx.heel_lift_mm == 6.0 and rx.warnings == ()


def test_worked_example_15_mm_warns_to_add_3_mm_to_the_left_outsole():
    rx = prescribe(foot(side=Side.LEFT), lld_mm=15.0, short_side=Side.LEFT)
    assert rx.heel_lift_mm == 6.0
    [warning] = rx.warnings
    assert "9 mm of lift wanted" in warning and "add 3 mm to the left shoe's outsole" in warning


def test_lld_below_threshold_gives_no_lift():
    rx = prescribe(foot(), lld_mm=2.9, short_side=Side.RIGHT)
    assert (rx.heel_lift_mm, rx.lift_extent) == (0.0, LiftExtent.NONE)
    assert decision(rx, "heel_lift_mm").rule == "lld.below_threshold"


def test_functional_lld_gives_no_lift_and_says_treat_the_cause():
    rx = prescribe(foot(), lld_mm=10.0, short_side=Side.RIGHT, lld_kind=LldKind.FUNCTIONAL)
    assert rx.heel_lift_mm == 0.0 and rx.lld_kind is LldKind.FUNCTIONAL
    [warning] = rx.warnings
    assert "functional" in warning and "no lift" in warning and "treat the cause" in warning
    assert decision(rx, "heel_lift_mm").source == "knutson_2005"


def test_functional_lift_fraction_is_a_parameter():
    rx = prescribe(foot(), lld_mm=10.0, short_side=Side.RIGHT, lld_kind=LldKind.FUNCTIONAL,
                   overrides={"lld.functional_fraction": 0.5})
    assert (rx.heel_lift_mm, rx.lift_extent) == (5.0, LiftExtent.HEEL)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    (dict(lld_mm=8.0), "needs the short side"),
    (dict(lld_mm=-1.0, short_side=Side.LEFT), "outside 0..100 mm"),
    (dict(lld_mm=float("nan"), short_side=Side.LEFT), "outside 0..100 mm"),
    (dict(lld_mm=8.0, short_side=Side.AUTO), "must be left or right"),
    (dict(lld_mm=8.0, short_side=Side.LEFT, lld_kind="anatomical"), "structural, functional"),
])
def test_bad_clinician_inputs_are_refused(kwargs, fragment):
    assert fragment in refused(prescribe, foot(), **kwargs)


def test_a_foot_without_a_side_is_refused():
    assert "set the side" in refused(prescribe, foot(side=Side.AUTO))


# --- properties ---

ANGLES = st.floats(-25.0, 25.0, allow_nan=False)


@st.composite
def rule_params(draw):
    """Parameters drawn anywhere inside their bounds, for the posting and lift rules."""
    keys = ["classification.pronated_deg", "classification.supinated_deg", "rearfoot_post.gain",
            "rearfoot_post.cap_deg", "supinated_post.gain", "supinated_post.cap_deg",
            "skive.start_deg", "skive.gain_mm_per_deg", "skive.cap_mm", "arch.target_mm",
            "arch.comfort_cap_mm", "lld.threshold_mm", "lld.fraction", "lld.device_cap_mm"]
    values = {}
    for key in keys:
        spec = params.describe(key)
        low = spec["min"]
        if key == "skive.start_deg":  # the relation params holds: not before the post starts
            low = max(low, values["classification.pronated_deg"])
        values[key] = draw(st.floats(low, spec["max"], allow_nan=False))
    assume(values["classification.pronated_deg"] > values["classification.supinated_deg"])
    return params.with_overrides(params.defaults(), values)


@settings(max_examples=150, deadline=None)
@given(a=ANGLES, b=ANGLES, p=rule_params())
def test_more_eversion_never_gives_less_medial_post_or_skive(a, b, p):
    low, high = sorted((a, b))
    first, second = prescribe(foot(angle=low), params=p), prescribe(foot(angle=high), params=p)
    assert first.rearfoot_post_deg <= second.rearfoot_post_deg
    assert first.medial_skive_mm <= second.medial_skive_mm


@settings(max_examples=150, deadline=None)
@given(a=ANGLES, b=ANGLES)
def test_more_eversion_never_gives_a_shallower_heel_cup(a, b):
    low, high = sorted((a, b))
    depths = [prescribe(foot(angle=angle)).heel_cup_depth_mm for angle in (low, high)]
    assert depths[0] <= depths[1]


@settings(max_examples=200, deadline=None)
@given(angle=ANGLES, arch=st.sampled_from([*ArchType, None]), height=st.floats(0.0, 30.0),
       lld=st.floats(0.0, 100.0), p=rule_params())
def test_rules_never_exceed_their_caps_or_the_field_limits(angle, arch, height, lld, p):
    rx = prescribe(foot(angle=angle, arch=arch, arch_height=height), lld_mm=lld,
                   short_side=Side.RIGHT, params=p)
    assert -p.supinated_post.cap_deg <= rx.rearfoot_post_deg <= p.rearfoot_post.cap_deg
    assert 0.0 <= rx.medial_skive_mm <= p.skive.cap_mm
    assert 0.0 <= rx.heel_lift_mm <= p.lld.device_cap_mm
    assert rx.arch_support_height_mm - height <= p.arch.comfort_cap_mm + 1e-9
    for name, (low, high) in FIELD_LIMITS.items():
        value = getattr(rx, name)
        assert value is None or low <= value <= high, (name, value)


@settings(max_examples=200, deadline=None)
@given(lld=st.floats(0.0, 100.0), short=st.sampled_from([Side.LEFT, Side.RIGHT]),
       side=st.sampled_from([Side.LEFT, Side.RIGHT]), kind=st.sampled_from(list(LldKind)),
       p=rule_params())
def test_a_lift_goes_only_on_the_short_side_and_never_below_the_threshold(
        lld, short, side, kind, p):
    rx = prescribe(foot(side=side), lld_mm=lld, short_side=short, lld_kind=kind, params=p)
    if side is not short or lld < p.lld.threshold_mm:
        assert (rx.heel_lift_mm, rx.shoe_outsole_lift_mm, rx.lift_extent) == (
            0.0, 0.0, LiftExtent.NONE)
    if rx.heel_lift_mm > 0:
        assert side is short and kind is LldKind.STRUCTURAL
        assert rx.heel_lift_mm + rx.shoe_outsole_lift_mm == pytest.approx(
            p.lld.fraction * lld, abs=0.11)


@settings(max_examples=150, deadline=None)
@given(p=rule_params(), eps=st.floats(1e-6, 0.05))
def test_posts_and_skive_are_continuous_at_their_thresholds(p, eps):
    def at(angle):
        return prescribe(foot(angle=angle), params=p)

    for threshold, gain, name in (
        (p.classification.pronated_deg, p.rearfoot_post.gain, "rearfoot_post_deg"),
        (p.classification.supinated_deg, p.supinated_post.gain, "rearfoot_post_deg"),
        (p.skive.start_deg, p.skive.gain_mm_per_deg, "medial_skive_mm"),
    ):
        jump = abs(getattr(at(threshold + eps), name) - getattr(at(threshold - eps), name))
        assert jump <= gain * 2 * eps + 0.1 + 1e-9, (name, threshold, jump)


# --- overrides: parsing, clinician decisions, caps and hard limits ---

def test_parse_overrides_separates_parameters_from_per_side_fields():
    o = parse_overrides(["arch.target_mm=16", "right.rearfoot_post_deg=3",
                         "left.device_length=full", 'softer_zones=["heel"]',
                         "left.first_ray_cutout=false", "left.lld.fraction=0.5"])
    assert o.params == {None: {"arch.target_mm": 16}, Side.LEFT: {"lld.fraction": 0.5}}
    assert o.fields == {Side.RIGHT: {"rearfoot_post_deg": 3.0},
                        Side.LEFT: {"device_length": DeviceLength.FULL, "first_ray_cutout": False},
                        None: {"softer_zones": ("heel",)}}
    assert o.for_side(Side.LEFT) == ({"arch.target_mm": 16, "lld.fraction": 0.5},
                                     {"device_length": DeviceLength.FULL,
                                      "first_ray_cutout": False, "softer_zones": ("heel",)})


def test_manifest_items_joined_by_semicolons_and_later_items_win():
    o = parse_overrides(["arch.target_mm=16; right.heel_lift_mm=2", "arch.target_mm=18"])
    assert o.params == {None: {"arch.target_mm": 18}}
    assert o.fields == {Side.RIGHT: {"heel_lift_mm": 2.0}}


def test_a_case_toml_holds_the_same_overrides():
    text = '[right]\nrearfoot_post_deg = 3\n[arch]\ntarget_mm = 16\n'
    assert overrides_from_mapping(tomllib.loads(text)) == parse_overrides(
        ["right.rearfoot_post_deg=3", "arch.target_mm=16"])


def test_a_field_override_is_a_clinician_decision_replacing_the_rule():
    rx = prescribe(foot(angle=8.0), overrides={"right.rearfoot_post_deg": 3})
    assert rx.rearfoot_post_deg == 3.0 and rx.warnings == ()
    d = decision(rx, "rearfoot_post_deg")
    assert (d.by, d.rule, d.value, d.source) == ("clinician", "clinician override", 3.0, None)
    assert d.inputs == {"rule": "rearfoot_post.medial", "rule_value": 4.0,
                        "rule_source": "root_1977"}


def test_rules_after_an_override_build_on_the_clinicians_value():
    rx = prescribe(foot(angle=0.0), overrides=parse_overrides(["rearfoot_post_deg=6"]))
    assert rx.heel_cup_depth_mm == 20.0  # Huppin: post 6° > 5
    assert decision(rx, "heel_cup_depth_mm").inputs["rearfoot_post_deg"] == 6.0


def test_an_override_for_the_other_foot_is_ignored():
    o = parse_overrides(["right.rearfoot_post_deg=3", "right.arch.target_mm=20"])
    left = foot(side=Side.LEFT, angle=8.0, arch=ArchType.LOW, arch_height=14.0)
    rx = prescribe(left, overrides=o)
    assert (rx.rearfoot_post_deg, rx.arch_support_height_mm) == (4.0, 15.0)
    assert all(d.by == "rule" for d in rx.decisions)


def test_a_parameter_override_changes_the_rule():
    rx = prescribe(foot(angle=8.0, arch=ArchType.LOW, arch_height=14.0),
                   overrides={"rearfoot_post.gain": 1.5, "arch.target_mm": 16})
    assert (rx.rearfoot_post_deg, rx.arch_support_height_mm) == (6.0, 16.0)
    assert decision(rx, "rearfoot_post_deg").inputs["rearfoot_post.gain"] == 1.5


@pytest.mark.parametrize(("item", "kwargs", "cap"), [
    ("rearfoot_post_deg=10", {}, "cap 8 (rearfoot_post.cap_deg)"),
    ("rearfoot_post_deg=-8", {}, "cap -6 (supinated_post.cap_deg)"),
    ("medial_skive_mm=8", {}, "cap 6 (skive.cap_mm)"),
    ("heel_lift_mm=9", dict(lld_mm=15.0, short_side=Side.RIGHT), "cap 6 (lld.device_cap_mm)"),
    ("arch_support_height_mm=25", {}, "cap 19 (arch.comfort_cap_mm above the scanned sole)"),
])
def test_an_override_may_pass_a_rule_cap_with_a_warning(item, kwargs, cap):
    field, _, value = item.partition("=")
    rx = prescribe(foot(arch=ArchType.LOW), overrides=parse_overrides([item]), **kwargs)
    assert getattr(rx, field) == float(value)
    assert any(cap in w and "set by the clinician" in w for w in rx.warnings), rx.warnings


def test_a_clinicians_lift_settles_the_outsole_and_the_extent():
    rx = prescribe(foot(), lld_mm=15.0, short_side=Side.RIGHT, overrides={"heel_lift_mm": 9})
    assert (rx.heel_lift_mm, rx.shoe_outsole_lift_mm, rx.lift_extent) == (9.0, 0.0, LiftExtent.HEEL)
    assert not any("outsole" in w for w in rx.warnings)


@pytest.mark.parametrize(("item", "fragments"), [
    ("rearfoot_post_deg=13", ["rearfoot_post_deg = 13", "-12..12"]),
    ("right.heel_lift_mm=20", ["right.heel_lift_mm = 20", "0..12"]),
    ("medial_skive_mm=9", ["medial_skive_mm = 9", "0..8"]),
    ("met_pad_x_pct=inf", ["met_pad_x_pct = inf", "40..90"]),
    ("rearfoot_post_deg=true", ["not a number", "-12..12"]),
    ("device_length=long", ["'long'", "three_quarter, sulcus, full"]),
    ("first_ray_cutout=1", ["first_ray_cutout = 1", "true or false"]),
    ('softer_zones=["toes"]', ["toes", "heel, midfoot, forefoot"]),
    ("arch.target_mm=99", ["arch.target_mm = 99", "5.0..30.0 mm"]),
    ("arch.target_mm=1979-05-27", ["is a date", "give a number"]),
    ("arch.target_mm=1 2", ["is not a value", "give a number"]),
    ("arch.target_mm", ["not key=value", "arch.target_mm=16"]),
])
def test_invalid_overrides_are_refused_with_what_is_allowed(item, fragments):
    message = refused(parse_overrides, [item])
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("key", ["nope", "left.nope", "arch.nope", "shoe_outsole_lift_mm", "side"])
def test_unknown_keys_are_refused_listing_parameters_and_fields(key):
    message = refused(parse_overrides, [f"{key}=1"])
    assert f"unknown key {key!r}" in message
    assert "arch.target_mm" in message and "rearfoot_post_deg" in message


def test_every_overridable_field_is_a_prescription_field():
    assert set(OVERRIDABLE) <= DEVICE_FIELDS
    assert DEVICE_FIELDS - set(OVERRIDABLE) == {"shoe_outsole_lift_mm"}


def test_a_lift_on_the_long_side_is_refused():
    message = refused(prescribe, foot(side=Side.RIGHT), lld_mm=10.0, short_side=Side.LEFT,
                      overrides={"right.heel_lift_mm": 3})
    assert "long side" in message and "left leg is 10 mm short" in message


def test_a_lift_without_a_discrepancy_may_go_on_either_foot():
    rx = prescribe(foot(), overrides={"heel_lift_mm": 4})  # e.g. bilateral lifts for the Achilles
    assert (rx.heel_lift_mm, rx.lift_extent) == (4.0, LiftExtent.HEEL)


@pytest.mark.parametrize(("mapping", "fragment"), [
    ({"device_length": "three_quarter", "lift_extent": "full", "heel_lift_mm": 4},
     "needs a full-length device"),
    ({"lift_extent": "heel"}, "a lift needs an extent and an extent a lift"),
])
def test_inconsistent_field_overrides_are_refused(mapping, fragment):
    assert fragment in refused(prescribe, foot(), overrides=mapping)


def test_a_clinicians_metatarsal_pad_is_placed_behind_the_first_metatarsal_head():
    pad = Overrides(params={}, fields={None: {"met_pad_height_mm": 4.0}})
    rx = prescribe(foot(), overrides=pad)
    assert rx.met_pad_x_pct == pytest.approx(100 * (190.0 - 5.0) / 260.0, abs=0.05)
    assert rx.device_length is DeviceLength.SULCUS
    assert decision(rx, "met_pad_x_pct").source == "hsi_2005"


def test_a_metatarsal_pad_without_the_landmark_warns():
    rx = prescribe(foot(mth1=None, missing={"truncated_length_mm": "no medial outline"}),
                   overrides={"met_pad.height_mm": 4})
    assert rx.met_pad_height_mm == 4.0 and rx.met_pad_x_pct is None
    assert any("no medial outline" in w and "met_pad_x_pct" in w for w in rx.warnings)


def test_orthocad_prescribe_is_the_stage_module_and_calls_prescribe():
    import orthocad
    from orthocad import prescribe as module

    assert orthocad.prescribe is module and callable(orthocad.prescribe)
    m = foot(side=Side.LEFT, angle=8.0)
    assert orthocad.prescribe(m, lld_mm=10, short_side=Side.LEFT) == module.prescribe(
        m, lld_mm=10, short_side=Side.LEFT)


# --- the arch support's apex ---

def test_the_arch_apex_sits_under_the_measured_crest():
    rx = prescribe(foot(apex=111.2, length=260.0))
    assert rx.arch_apex_pct == 42.8  # 100 × 111.2 / 260, to 0.1
    d = decision(rx, "arch_apex_pct")
    assert (d.rule, d.value, d.source) == ("arch.apex_measured", 42.8, "michaud_1993")
    assert d.inputs == {"medial_arch_apex_x_mm": 111.2, "foot_length_mm": 260.0,
                        "arch.apex_pct": 40.0}
    assert "111.2 mm of 260.0 mm" in d.reason


def test_without_a_measured_apex_the_parameter_places_it_and_says_why():
    rx = prescribe(foot(apex=None, missing={"medial_arch_apex_x_mm": "no arch wall"}),
                   overrides={"arch.apex_pct": 45})
    d = decision(rx, "arch_apex_pct")
    assert (rx.arch_apex_pct, d.rule, d.source) == (45.0, "arch.apex_default",
                                                     "cavanagh_rodgers_1987")
    assert "no arch wall" in d.reason and d.inputs["medial_arch_apex_x_mm"] is None


def test_a_measured_apex_never_leaves_the_fields_limits():
    assert prescribe(foot(apex=20.0)).arch_apex_pct == FIELD_LIMITS["arch_apex_pct"][0]


def test_a_clinician_may_place_the_apex_elsewhere():
    rx = prescribe(foot(apex=111.2), overrides={"arch_apex_pct": 38})
    d = decision(rx, "arch_apex_pct")
    assert (rx.arch_apex_pct, d.by, d.inputs["rule_value"]) == (38.0, "clinician", 42.8)


# --- end to end: synthetic feet of known type, the bundled real scans, a foam box ---

SYNTHETIC_FEET = {
    "flat": FootShape(medial_arch_height_mm=3.0, arch_contact_width_mm=60.0,
                      dorsal_height_mm=52.0, rearfoot_angle_deg=9.0),
    "cavus": FootShape(medial_arch_height_mm=26.0, arch_contact_width_mm=5.0,
                       dorsal_height_mm=78.0, rearfoot_angle_deg=-5.0),
    "neutral": FootShape(rearfoot_angle_deg=1.0),
}


def scanned(shape: FootShape, *, seed: int, loading: Loading = Loading.WEIGHT_BEARING
            ) -> Measurements:
    """A synthetic scan under the spec's conditions, through the whole measuring pipeline."""
    data = synthetic.synth_scan(shape, n_points=100_000, noise_mm=0.5, outlier_fraction=0.01,
                                pose="random", seed=seed)
    [m] = pipeline.measure_scan(scan.from_points(data.points), loading=loading)
    return m


@pytest.fixture(scope="module")
def synthetic_feet() -> dict[str, Measurements]:
    return {name: scanned(shape, seed=20 + i)
            for i, (name, shape) in enumerate(SYNTHETIC_FEET.items())}


@pytest.mark.parametrize(("name", "arch", "rearfoot"), [
    ("flat", ArchType.LOW, RearfootType.PRONATED), ("cavus", ArchType.HIGH, RearfootType.SUPINATED),
    ("neutral", ArchType.NORMAL, RearfootType.NEUTRAL)])
def test_the_synthetic_feet_are_the_type_their_truth_says(synthetic_feet, name, arch, rearfoot):
    truth = synthetic.truth(SYNTHETIC_FEET[name])
    expected = classify(truth, scan_kind=ScanKind.FULL, loading=Loading.WEIGHT_BEARING,
                        params=params.defaults())
    c = synthetic_feet[name].classification
    assert (expected.arch, expected.rearfoot) == (c.arch, c.rearfoot) == (arch, rearfoot)


def test_a_flat_pronated_foot_gets_a_raised_arch_a_medial_flange_and_a_medial_post(
        synthetic_feet):
    m = synthetic_feet["flat"]
    rx = prescribe(m)
    p = params.defaults()
    rise = min(p.arch.target_mm - m.medial_arch_height_mm, p.arch.comfort_cap_mm)
    assert rx.arch_support_height_mm == pytest.approx(m.medial_arch_height_mm + rise, abs=0.051)
    assert rise > 4.0 and decision(rx, "arch_support_height_mm").rule == "arch.low_raise"
    assert rx.medial_flange_mm == p.arch.medial_flange_mm > 0
    truth = synthetic.truth(SYNTHETIC_FEET["flat"])["rearfoot_angle_deg"]  # ≈ 9° everted
    assert rx.rearfoot_post_deg == pytest.approx(truth - p.classification.pronated_deg, abs=1.0)
    assert rx.medial_skive_mm == pytest.approx(truth - p.skive.start_deg, abs=1.0)
    assert rx.heel_cup_depth_mm == p.heel_cup.deep_mm  # skive + post > 5 (Huppin)
    assert (rx.forefoot_post_deg, rx.lateral_flange_mm, rx.first_ray_cutout) == (0.0, 0.0, False)
    assert rx.top_cover_mm == p.device.top_cover_mm
    assert rx.device_length is DeviceLength.THREE_QUARTER


def test_a_cavus_foot_gets_total_contact_a_lateral_forefoot_post_and_cushioning(
        synthetic_feet):
    m = synthetic_feet["cavus"]
    rx = prescribe(m)
    p = params.defaults()
    assert rx.arch_support_height_mm == m.medial_arch_height_mm  # follows the scanned sole
    assert decision(rx, "arch_support_height_mm").rule == "arch.total_contact"
    assert rx.forefoot_post_deg == -p.cavus.forefoot_post_deg < 0
    assert rx.first_ray_cutout and rx.lateral_flange_mm == p.cavus.lateral_flange_mm > 0
    assert rx.top_cover_mm == p.cavus.top_cover_mm > p.device.top_cover_mm
    assert rx.softer_zones == ("heel", "forefoot")
    assert rx.medial_flange_mm == 0.0 and rx.medial_skive_mm == 0.0
    truth = synthetic.truth(SYNTHETIC_FEET["cavus"])["rearfoot_angle_deg"]  # ≈ 5° inverted
    assert rx.rearfoot_post_deg == pytest.approx(truth - p.classification.supinated_deg,
                                                 abs=1.0)
    assert rx.device_length is DeviceLength.SULCUS  # the forefoot post reaches the heads


def test_a_neutral_foot_gets_a_total_contact_device_without_posting(synthetic_feet):
    m = synthetic_feet["neutral"]
    rx = prescribe(m)
    expected = NEUTRAL | {"arch_support_height_mm": m.medial_arch_height_mm,
                          "arch_apex_pct": rx.arch_apex_pct}  # the apex: its own test
    assert {name: getattr(rx, name) for name in expected} == expected
    assert rx.warnings == ()


@pytest.mark.parametrize("name", list(SYNTHETIC_FEET))
def test_the_arch_apex_of_a_synthetic_foot_comes_from_its_crest(synthetic_feet, name):
    truth = synthetic.truth(SYNTHETIC_FEET[name])
    rx = prescribe(synthetic_feet[name])
    expected = 100.0 * truth["medial_arch_apex_x_mm"] / truth["foot_length_mm"]
    assert rx.arch_apex_pct == pytest.approx(expected, abs=2.0)
    assert decision(rx, "arch_apex_pct").rule == "arch.apex_measured"


@pytest.fixture(scope="module")
def real_feet() -> dict[str, Measurements]:
    out = {}
    for name in ("techmed3d_plantar_right.obj", "find_template_left.obj"):
        [out[name]] = pipeline.measure_scan(scan.read(SCANS / name))
    return out


@pytest.mark.parametrize("name", ["techmed3d_plantar_right.obj", "find_template_left.obj"])
def test_the_bundled_real_scans_get_a_plausible_device(real_feet, name):
    m = real_feet[name]
    rx = prescribe(m)
    p = params.defaults()
    for field, (low, high) in FIELD_LIMITS.items():
        value = getattr(rx, field)
        assert value is None or low <= value <= high, (field, value)
    assert -p.supinated_post.cap_deg <= rx.rearfoot_post_deg <= p.rearfoot_post.cap_deg
    assert 0.0 <= rx.medial_skive_mm <= p.skive.cap_mm
    assert rx.heel_cup_depth_mm in (p.heel_cup.standard_mm, p.heel_cup.with_skive_mm,
                                    p.heel_cup.deep_mm)
    assert 35.0 <= rx.arch_apex_pct <= 50.0  # the navicular region
    assert decision(rx, "arch_apex_pct").rule == "arch.apex_measured"
    scanned_arch = m.medial_arch_height_mm
    assert scanned_arch <= rx.arch_support_height_mm <= scanned_arch + p.arch.comfort_cap_mm
    # The device is the kind its classes call for.
    assert m.classification.arch is not None and m.classification.rearfoot is not None
    assert (rx.medial_flange_mm > 0) == (m.classification.arch is ArchType.LOW)
    assert (rx.forefoot_post_deg < 0) == (m.classification.arch is ArchType.HIGH)
    assert (rx.rearfoot_post_deg > 0) == (m.classification.rearfoot is RearfootType.PRONATED)
    bibliography = params.bibliography()
    assert all(d.source in bibliography for d in rx.decisions)
    json.dumps(rx.to_dict())


def test_a_foam_box_plantar_scan_gets_no_arch_class_and_the_decision_says_why():
    m = scanned(FootShape(scan_kind=ScanKind.PLANTAR, medial_arch_height_mm=5.0,
                          arch_contact_width_mm=55.0), seed=30, loading=Loading.FOAM_BOX)
    assert m.arch_index is not None and m.classification.arch is None
    rx = prescribe(m)
    d = decision(rx, "arch_support_height_mm")
    assert d.rule == "arch.total_contact" and rx.arch_support_height_mm == m.medial_arch_height_mm
    assert "not classified" in d.reason and NOT_APPLICABLE in d.reason
    assert d.inputs["arch"] is None and d.inputs["arch_reason"] == NOT_APPLICABLE
    assert any("arch not classified" in w for w in rx.warnings)
    assert (rx.medial_flange_mm, rx.forefoot_post_deg, rx.lateral_flange_mm) == (0.0, 0.0, 0.0)


def test_a_foam_box_full_scan_takes_its_arch_class_from_the_ahi():
    m = scanned(SYNTHETIC_FEET["flat"], seed=31, loading=Loading.FOAM_BOX)
    c = m.classification
    assert (c.arch, c.arch_driver) == (ArchType.LOW, "arch_height_index")
    assert decision(prescribe(m), "arch_support_height_mm").rule == "arch.low_raise"


# --- the command ---

def test_prescribe_command_json_with_clinician_inputs(capsys):
    code = main(["prescribe", str(SCANS / "techmed3d_plantar_right.obj"), "--json",
                 "--lld-mm", "10", "--short-side", "right", "--set", "right.medial_skive_mm=2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rx = json.loads(out)
    assert (rx["side"], rx["heel_lift_mm"], rx["lift_extent"]) == ("right", 6.0, "heel")
    [skive] = [d for d in rx["decisions"] if d["field"] == "medial_skive_mm"]
    assert (skive["value"], skive["rule"], skive["by"]) == (2.0, "clinician override",
                                                             "clinician")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "arch.nope=1"], "unknown key 'arch.nope'"),
    (["--set", "right.rearfoot_post_deg=40"], "outside the device's limits"),
    (["--set", "classification.pronated_deg=12"], "need skive.start_deg >="),
    (["--lld-kind", "anatomical"], "'structural', 'functional'"),
])
def test_prescribe_command_refuses_bad_inputs_with_exit_2(capsys, args, fragment):
    code = main(["prescribe", str(SCANS / "techmed3d_plantar_right.obj"), *args])
    _, err = capsys.readouterr()
    assert code == 2 and fragment in err and "Traceback" not in err
