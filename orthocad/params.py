"""Parameters: one typed, validated model, loaded from TOML.

Every number a rule uses lives here, grouped by the rule it drives, with its
unit, its bounds and the clinical or technical source it comes from (a key of
``orthocad/data/bibliography.toml``). The defaults ship as
``orthocad/data/defaults.toml``, which is exactly :func:`dump_toml` of the
model's defaults (a test holds them equal).

Values are strict: a number where a number is due (an integer is accepted for
a float), ``true``/``false`` for a switch; ``"4"`` or ``1`` for a switch is
refused rather than guessed.

Overrides use dotted keys, ``group.field=value`` (``--set
classification.arch_index_low=0.27``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import tomllib
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orthocad.enums import Construction
from orthocad.errors import ParameterError


def param(default: float, *, unit: str, ge: float, le: float, source: str, doc: str) -> Any:
    """A bounded numeric parameter with its unit and bibliography key."""
    return Field(
        default, ge=ge, le=le, description=doc,
        json_schema_extra={"unit": unit, "source": source},
    )


def flag(default: bool, *, source: str, doc: str) -> Any:
    """An on/off parameter with its bibliography key."""
    return Field(default, description=doc, json_schema_extra={"unit": "bool", "source": source})


def choice(default: StrEnum, *, source: str, doc: str) -> Any:
    """One of an enum's values (TOML gives the value as a string, hence not strict)."""
    return Field(default, strict=False, description=doc, json_schema_extra={
        "unit": "choice", "source": source, "choices": [c.value for c in type(default)]})


_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt}


def _require(model: BaseModel, relations: list[tuple[str, str, str, str]]) -> None:
    """Raise one message naming every broken relation ``(field, op, field, why)`` between
    (dotted) fields of ``model``, with their values."""
    def value(dotted: str) -> float:
        return functools.reduce(getattr, dotted.split("."), model)

    broken = [f"{a} = {value(a):g} and {b} = {value(b):g}: need {a} {op} {b} ({why})"
              for a, op, b, why in relations if not _COMPARE[op](value(a), value(b))]
    if broken:
        raise ValueError("; ".join(broken))


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Classification(Group):
    """Thresholds that classify the arch and the rearfoot (measurements spec)."""

    arch_index_low: float = param(
        0.26, unit="1", ge=0.15, le=0.40, source="cavanagh_rodgers_1987",
        doc="Arch index at or above which the arch is low (planus).")
    arch_index_high: float = param(
        0.21, unit="1", ge=0.05, le=0.30, source="cavanagh_rodgers_1987",
        doc="Arch index at or below which the arch is high (cavus).")
    ahi_low: float = param(
        0.31, unit="1", ge=0.20, le=0.40, source="williams_mcclay_2000",
        doc="Arch height index below which the arch is low.")
    ahi_high: float = param(
        0.37, unit="1", ge=0.28, le=0.50, source="williams_mcclay_2000",
        doc="Arch height index above which the arch is high.")
    pronated_deg: float = param(
        4.0, unit="deg", ge=0.0, le=15.0, source="rcsp_norms",
        doc="Rearfoot angle (eversion +) above which the rearfoot is pronated; "
            "the medial rearfoot post starts here.")
    supinated_deg: float = param(
        -2.0, unit="deg", ge=-15.0, le=0.0, source="rcsp_norms",
        doc="Rearfoot angle below which the rearfoot is supinated; the lateral rearfoot post "
            "starts here.")

    @model_validator(mode="after")
    def _ordered(self) -> Classification:
        # Each scale needs a normal band between its two thresholds, or a foot would be both.
        _require(self, [
            ("arch_index_low", ">", "arch_index_high", "a low arch covers more of the midfoot"),
            ("ahi_low", "<", "ahi_high", "a low arch has the smaller arch height index"),
            ("pronated_deg", ">", "supinated_deg", "a neutral heel lies between the two"),
        ])
        return self


class Device(Group):
    """The shell every device has, whatever the foot."""

    shell_thickness_mm: float = param(
        3.0, unit="mm", ge=1.5, le=6.0, source="pallari_2010",
        doc="Shell thickness of the printed device (sintered nylon shells are ~3 mm; "
            "polypropylene shells 3-5 mm).")
    top_cover_mm: float = param(
        1.5, unit="mm", ge=0.0, le=6.0, source="michaud_1993",
        doc="Top-cover thickness allowance of a standard device (1/16 inch).")


class RearfootPost(Group):
    """Medial (varus) rearfoot post for a pronated heel: clamp(gain * (angle - threshold), 0, cap).

    The threshold is classification.pronated_deg, so the post is 0 exactly
    where the heel stops being pronated (no jump).
    """

    gain: float = param(
        1.0, unit="deg/deg", ge=0.25, le=2.0, source="root_1977",
        doc="Degrees of medial post per degree of eversion beyond the pronated threshold; "
            "1.0 gives the customary 4 deg post to a typical pronator (8 deg everted).")
    cap_deg: float = param(
        8.0, unit="deg", ge=0.0, le=10.0, source="telfer_2013",
        doc="Largest medial post a rule gives (steeper posts were abandoned for the "
            "inversion-sprain risk; dose-response studied up to 10 deg).")


class SupinatedPost(Group):
    """Lateral (valgus) rearfoot post for an inverted heel, continuous like the medial one.

    Only the heel's own inversion (rearfoot angle below
    classification.supinated_deg) drives it, never the arch class.
    """

    gain: float = param(
        1.0, unit="deg/deg", ge=0.25, le=2.0, source="telfer_2013",
        doc="Degrees of lateral post per degree of inversion beyond the supinated threshold.")
    cap_deg: float = param(
        6.0, unit="deg", ge=0.0, le=10.0, source="telfer_2013",
        doc="Largest lateral post a rule gives (6 deg lateral was the steepest studied).")


class Skive(Group):
    """Kirby medial heel skive for severe eversion: clamp(gain * (angle - start), 0, cap)."""

    start_deg: float = param(
        8.0, unit="deg", ge=4.0, le=20.0, source="kirby_1992",
        doc="Rearfoot eversion above which a medial heel skive is added (the post alone "
            "has reached the customary 4 deg here).")
    gain_mm_per_deg: float = param(
        1.0, unit="mm/deg", ge=0.25, le=3.0, source="bonanno_2012",
        doc="Skive depth per degree of eversion beyond start_deg (2, 4, 6 mm at 10, 12, 14 deg).")
    cap_mm: float = param(
        6.0, unit="mm", ge=2.0, le=8.0, source="kirby_1992",
        doc="Deepest skive a rule gives: 2-6 mm is the clinical range, 8 mm only in extreme "
            "cases (a clinician may set it).")
    angle_deg: float = param(
        20.0, unit="deg", ge=15.0, le=25.0, source="kirby_1992",
        doc="Frontal-plane angle of the skive plane (15-25 deg).")


class HeelCup(Group):
    """Heel-cup depth: standard, deeper with a skive, deep when skive + post is large (Huppin)."""

    standard_mm: float = param(
        12.0, unit="mm", ge=6.0, le=18.0, source="huppin_heel_cup",
        doc="Heel-cup depth of a standard device (dress devices are shallower, under 14 mm).")
    with_skive_mm: float = param(
        14.0, unit="mm", ge=12.0, le=20.0, source="huppin_heel_cup",
        doc="Minimum heel-cup depth with a medial heel skive.")
    deep_mm: float = param(
        20.0, unit="mm", ge=18.0, le=25.0, source="huppin_heel_cup",
        doc="Deep heel cup (20-22 mm) when skive (mm) + medial post (deg) exceeds deep_above.")
    deep_above: float = param(
        5.0, unit="mm+deg", ge=2.0, le=10.0, source="huppin_heel_cup",
        doc="Skive depth (mm) plus medial post (deg) above which the heel cup is deep.")

    @model_validator(mode="after")
    def _deepening(self) -> HeelCup:
        # A skive or a steep post must never make the cup shallower.
        if not self.standard_mm <= self.with_skive_mm <= self.deep_mm:
            raise ValueError(
                f"standard_mm {self.standard_mm:g}, with_skive_mm {self.with_skive_mm:g}, "
                f"deep_mm {self.deep_mm:g} must not decrease; order them standard <= with_skive "
                "<= deep")
        return self


class Arch(Group):
    """Arch support: total contact, raised toward a target for a low arch, with a medial flange."""

    target_mm: float = param(
        15.0, unit="mm", ge=5.0, le=30.0, source="peng_2022",
        doc="Plantar arch height (spec's medial_arch_height_mm) a low arch's support rises "
            "toward; a clinic starting value (higher support lowers plantar-fascia strain).")
    comfort_cap_mm: float = param(
        5.0, unit="mm", ge=0.0, le=12.0, source="cheng_2021",
        doc="Most the support may rise above the scanned sole (more impinges and is not "
            "tolerated).")
    apex_pct: float = param(
        40.0, unit="%FL", ge=25.0, le=65.0, source="cavanagh_rodgers_1987",
        doc="Apex of the arch support, % of foot length from the heel, when the scan does not "
            "give the foot's own medial arch apex: the middle of the footprint's midfoot third "
            "(about 27-53 %FL).")
    medial_flange_mm: float = param(
        10.0, unit="mm", ge=0.0, le=20.0, source="banwell_2014",
        doc="Medial arch flange height for a low arch (more medial control).")


class Cavus(Group):
    """High arch: lateral forefoot post, first-ray cut-out, lateral flange, cushioning."""

    forefoot_post_deg: float = param(
        4.0, unit="deg", ge=0.0, le=8.0, source="manoli_graham_2005",
        doc="Lateral (valgus) forefoot post for a high arch, in degrees (applied as negative).")
    first_ray_cutout: bool = flag(
        True, source="manoli_graham_2005",
        doc="Recess under the first metatarsal head for the plantarflexed first ray.")
    lateral_flange_mm: float = param(
        8.0, unit="mm", ge=0.0, le=20.0, source="lopiccolo_2010",
        doc="Lateral flange height for a high arch (keeps the lateral column on the device).")
    top_cover_mm: float = param(
        3.0, unit="mm", ge=1.5, le=6.0, source="burns_2005",
        doc="Thicker, cushioning top cover (1/8 inch): the rigid high-arched foot absorbs "
            "shock badly and loads heel and forefoot.")


class Lld(Group):
    """Leg-length discrepancy: a partial lift on the short side, capped in the device."""

    threshold_mm: float = param(
        3.0, unit="mm", ge=0.0, le=10.0, source="gurney_2002",
        doc="Discrepancy below which no lift is given.")
    fraction: float = param(
        0.6, unit="1", ge=0.3, le=1.0, source="brady_2003",
        doc="Fraction of the discrepancy lifted (start partial; the body adapts).")
    device_cap_mm: float = param(
        6.0, unit="mm", ge=0.0, le=12.0, source="brady_2003",
        doc="Most lift the device holds (about 1/4 inch fits a shoe); the rest goes on "
            "the outsole.")
    full_length_above_mm: float = param(
        10.0, unit="mm", ge=3.0, le=25.0, source="gurney_2002",
        doc="Wanted lift above which it is full length, not heel-only (a tall heel lift "
            "plantarflexes the ankle and loads the forefoot).")
    functional_fraction: float = param(
        0.0, unit="1", ge=0.0, le=1.0, source="knutson_2005",
        doc="Fraction lifted for a functional discrepancy: none by default (treat the cause).")


class MetPad(Group):
    """Optional metatarsal pad, just proximal to the metatarsal heads."""

    height_mm: float = param(
        0.0, unit="mm", ge=0.0, le=8.0, source="kang_2006",
        doc="Pad height; 0 = no pad (a pad is prescribed for metatarsalgia, not by foot type).")
    behind_mth_mm: float = param(
        5.0, unit="mm", ge=0.0, le=15.0, source="hsi_2005",
        doc="Pad apex distance proximal to the first metatarsal head line (just proximal "
            "relieves most; two sensor rows, ~9 mm, did not).")


class Quality(Group):
    """Scan-quality gate: below these limits a scan cannot support a device."""

    min_density_per_cm2: float = param(
        10.0, unit="points/cm2", ge=0.0, le=1000.0, source="orthocad_quality",
        doc="Plantar points per cm2 of sole after cleaning (a 1 mm voxel grid gives ~100; "
            "lab plantar scanners ~25).")
    min_relative_density: float = param(
        0.5, unit="ratio", ge=0.0, le=1.0, source="orthocad_quality",
        doc="Sampling density of the sparsest region (heel, arch, forefoot) over the sole's "
            "average: a region scanned much more sparsely loses its shape.")
    min_sole_coverage: float = param(
        0.90, unit="fraction", ge=0.0, le=1.0, source="orthocad_quality",
        doc="Fraction of the footprint outline with sole surface near it (within 2 mm or two "
            "point spacings).")
    max_hole_mm: float = param(
        10.0, unit="mm", ge=1.0, le=100.0, source="orthocad_quality",
        doc="Largest hole tolerated in the heel or arch surface (diameter); the device must "
            "fit there, and interpolating across more guesses the shape.")
    max_noise_mm: float = param(
        0.8, unit="mm", ge=0.05, le=10.0, source="orthocad_quality",
        doc="Surface noise (RMS distance of points from local quadric fits); measurements "
            "are held to 1 mm, and a scan with 1 mm noise reads 0.94-0.97.")


class Insole(Group):
    """Insole geometry: outline, distal edge, tessellation and the shoe-fit limit."""

    margin_mm: float = param(
        3.0, unit="mm", ge=-5.0, le=10.0, source="michaud_1993",
        doc="Outline offset outward from the foot's smoothed silhouette: room for the heel-cup "
            "and flange walls outside the foot (negative shrinks the device).")
    three_quarter_behind_mm: float = param(
        7.0, unit="mm", ge=5.0, le=10.0, source="root_1977",
        doc="A three-quarter device ends this far behind the oblique line through the first "
            "and fifth metatarsal heads.")
    feather_mm: float = param(
        10.0, unit="mm", ge=0.0, le=30.0, source="michaud_1993",
        doc="Width of the band at a three-quarter or sulcus device's distal edge over which "
            "it thins to a 1 mm feathered edge (no step under the forefoot).")
    stl_tolerance_mm: float = param(
        0.05, unit="mm", ge=0.005, le=0.5, source="orthocad_insole",
        doc="Absolute chord tolerance of the triangle mesh (STL, 3MF); printers resolve "
            "about 0.1 mm.")
    max_height_mm: float = param(
        45.0, unit="mm", ge=10.0, le=80.0, source="orthocad_insole",
        doc="Tallest the device may stand above the shoe floor (heel-cup rim, posts and lift "
            "included) and still fit a shoe. A total-contact device under a high arch "
            "(medial arch 35 mm) with a 3 mm shell stands about 40 mm tall; a shoe's heel "
            "counter is 50-60 mm.")
    construction: Construction = choice(
        Construction.FILLED, source="pallari_2010",
        doc="filled: solid from the top surface down to the floor; shell: a uniform shell of "
            "the shell thickness under the top (the arch hollow, open to the floor), with the "
            "heel (rearfoot post) and the forefoot contact solid to the floor.")
    engrave: bool = flag(
        True, source="orthocad_insole",
        doc="Engrave the case id, side and orthocad version under the heel when the caller "
            "names the case (batch and CLI output do; a library build without a case id "
            "never engraves).")
    engrave_height_mm: float = param(
        4.0, unit="mm", ge=2.0, le=8.0, source="orthocad_insole",
        doc="Font size of the engraving (shrunk to fit under the heel when the text is long).")
    engrave_depth_mm: float = param(
        0.4, unit="mm", ge=0.2, le=1.0, source="orthocad_insole",
        doc="Depth of the engraving into the underside; the heel seat above the letters keeps "
            "the shell thickness less this.")


class Params(Group):
    """All of orthocad's parameters."""

    classification: Classification = Classification()
    quality: Quality = Quality()
    device: Device = Device()
    rearfoot_post: RearfootPost = RearfootPost()
    supinated_post: SupinatedPost = SupinatedPost()
    skive: Skive = Skive()
    heel_cup: HeelCup = HeelCup()
    arch: Arch = Arch()
    cavus: Cavus = Cavus()
    lld: Lld = Lld()
    met_pad: MetPad = MetPad()
    insole: Insole = Insole()

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        _require(self, [
            ("skive.start_deg", ">=", "classification.pronated_deg",
             "a skive is for a heel everted beyond where the medial post starts"),
            ("cavus.top_cover_mm", ">=", "device.top_cover_mm",
             "a high arch's top cover cushions more than the standard one"),
        ])
        return self


def defaults() -> Params:
    """The shipped defaults."""
    return Params()


def load(path: str | Path) -> Params:
    """Load a parameter file; fields it leaves out keep their defaults."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"{path}: parameter file not found; check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as bad:
        raise ParameterError(f"{path}: not valid TOML ({bad}); fix the syntax") from None
    return validate(data, where=str(path))


def validate(data: dict, *, where: str = "parameters") -> Params:
    """Build a :class:`Params` from nested plain data, with a one-line error on failure."""
    try:
        return Params.model_validate(data)
    except ValidationError as bad:
        raise ParameterError(f"{where}: {_explain(bad)}") from None


def with_overrides(params: Params, overrides: dict[str, Any], *, where: str = "--set") -> Params:
    """Return ``params`` with dotted-key overrides (``{"group.field": value}``) applied."""
    data = params.model_dump()
    for key, value in overrides.items():
        group, _, name = key.partition(".")
        if group not in data or name not in data[group]:
            raise ParameterError(f"{where}: unknown parameter {key!r}; known: {', '.join(keys())}")
        data[group][name] = value
    return validate(data, where=where)


def keys() -> list[str]:
    """Every parameter's dotted key."""
    return [f"{group}.{name}" for group, model in _groups().items() for name in model.model_fields]


def describe(key: str) -> dict[str, Any]:
    """Unit, bounds, source and text of one parameter (for messages and reports)."""
    group, _, name = key.partition(".")
    info = _groups()[group].model_fields[name]
    low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
    return {
        "key": key, "default": info.default, "doc": info.description,
        "min": low, "max": high, **(info.json_schema_extra or {}),
    }


def dump_toml(params: Params | None = None) -> str:
    """The parameters as a commented TOML file users can copy and edit."""
    params = params or defaults()
    lines = ["# orthocad parameters. Units and sources in the comments; "
             "see `orthocad params --schema`.", ""]
    for group, model in _groups().items():
        doc = (f"# {line.strip()}".rstrip() for line in model.__doc__.strip().splitlines())
        lines += [f"[{group}]", *doc]
        for name in model.model_fields:
            spec = describe(f"{group}.{name}")
            value = getattr(getattr(params, group), name)
            allowed = "true/false" if spec["unit"] == "bool" else (
                f"{spec['unit']}, {spec['min']}..{spec['max']}")
            if spec["unit"] == "choice":
                allowed = "one of " + "/".join(spec["choices"])
            lines.append(f"# {spec['doc']} [{allowed}; {spec['source']}]")
            lines.append(f"{name} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def schema() -> dict:
    """The JSON schema of the parameter file."""
    return Params.model_json_schema()


def digest(params: Params) -> str:
    """SHA-256 of the parameters' canonical JSON: equal parameters, equal digest."""
    canonical = json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def bibliography() -> dict[str, dict[str, str]]:
    """The sources parameters and rules cite, keyed as they cite them."""
    text = resources.files("orthocad").joinpath("data/bibliography.toml").read_text("utf-8")
    return tomllib.loads(text)


def _groups() -> dict[str, type[Group]]:
    return {name: info.annotation for name, info in Params.model_fields.items()}


def _explain(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown parameter {key!r}; known: {', '.join(keys())}"
    if first["type"] == "value_error":  # a rule across fields of one group, or across groups
        return f"{key}: {first['ctx']['error']}" if key else str(first["ctx"]["error"])
    given = _as_toml(first.get("input"))
    if key not in keys():  # a group given as a value, e.g. `arch = 3`
        return f"{key} = {given}: {first['msg']}; write it as a [{key}] table"
    spec = describe(key)
    if spec["unit"] == "bool":
        allowed = "allowed: true or false"
    elif spec["unit"] == "choice":
        allowed = "allowed: " + ", ".join(f'"{c}"' for c in spec["choices"])
    else:
        allowed = f"allowed: a number in {spec['min']}..{spec['max']} {spec['unit']}"
    return f"{key} = {given}: {first['msg'].lower()}; {allowed}"


def _as_toml(value: Any) -> str:
    """A value as the user wrote it in TOML (``true``, ``"6"``), for messages."""
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)
