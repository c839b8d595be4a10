"""Parameters: shipped defaults, TOML round trip, and one-line errors that name the fix."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from orthocad import params
from orthocad.errors import ExitCode, ParameterError


def write(tmp_path, text: str):
    path = tmp_path / "params.toml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(call, *args, **kwargs) -> str:
    """The message of the ParameterError ``call`` raises; it must be one line."""
    with pytest.raises(ParameterError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    assert caught.value.exit_code is ExitCode.BAD_INPUT
    return message


def test_shipped_defaults_file_is_exactly_the_dump_of_the_defaults():
    shipped = resources.files("orthocad").joinpath("data/defaults.toml").read_text("utf-8")
    assert shipped == params.dump_toml(params.defaults())


def test_shipped_defaults_file_loads_back_to_the_defaults(tmp_path):
    assert params.load(write(tmp_path, params.dump_toml())) == params.defaults()


def test_dump_then_load_round_trips_changed_values(tmp_path):
    changed = params.with_overrides(params.defaults(), {
        "arch.target_mm": 16, "cavus.first_ray_cutout": False, "lld.fraction": 0.75,
        "classification.supinated_deg": -3.5,
    })
    loaded = params.load(write(tmp_path, params.dump_toml(changed)))
    assert loaded == changed
    assert params.digest(loaded) == params.digest(changed) != params.digest(params.defaults())
    assert (loaded.arch.target_mm, loaded.cavus.first_ray_cutout) == (16.0, False)


def test_a_partial_file_keeps_the_other_defaults(tmp_path):
    loaded = params.load(write(tmp_path, "[lld]\nfraction = 0.5\n"))
    assert loaded.lld.fraction == 0.5
    assert loaded.lld.device_cap_mm == params.defaults().lld.device_cap_mm
    assert loaded.arch == params.defaults().arch


def test_an_integer_is_accepted_for_a_number(tmp_path):
    assert params.load(write(tmp_path, "[arch]\ntarget_mm = 16\n")).arch.target_mm == 16.0


def test_a_choice_is_written_and_read_as_its_value(tmp_path):
    from orthocad.enums import Construction

    loaded = params.load(write(tmp_path, '[insole]\nconstruction = "shell"\n'))
    assert loaded.insole.construction is Construction.SHELL
    assert 'construction = "filled"' in params.dump_toml()
    message = refused(params.load, write(tmp_path, '[insole]\nconstruction = "hollow"\n'))
    assert "insole.construction" in message and '"filled", "shell"' in message


@pytest.mark.parametrize("key", params.keys())
def test_every_parameter_has_unit_bounds_doc_and_a_resolvable_source(key):
    spec = params.describe(key)
    assert spec["doc"] and spec["unit"]
    assert spec["source"] in params.bibliography(), spec["source"]
    if spec["unit"] == "bool":
        assert isinstance(spec["default"], bool)
    elif spec["unit"] == "choice":
        assert spec["default"] in spec["choices"] and len(spec["choices"]) >= 2
    else:
        assert spec["min"] < spec["max"]
        assert spec["min"] <= spec["default"] <= spec["max"]


def test_groups_cover_every_prescription_rule():
    groups = {key.partition(".")[0] for key in params.keys()}
    assert groups == {"classification", "quality", "insole", "device", "rearfoot_post",
                      "supinated_post", "skive",
                      "heel_cup", "arch", "cavus", "lld", "met_pad"}


def test_literature_defaults():
    p = params.defaults()
    assert (p.rearfoot_post.gain * (8.0 - p.classification.pronated_deg), p.rearfoot_post.cap_deg) \
        == (4.0, 8.0)  # the customary 4° post for a typical (8° everted) pronator, capped at 8°
    assert (p.skive.cap_mm, p.skive.angle_deg) == (6.0, 20.0)
    assert (p.heel_cup.standard_mm, p.heel_cup.with_skive_mm, p.heel_cup.deep_mm,
            p.heel_cup.deep_above) == (12.0, 14.0, 20.0, 5.0)
    assert (p.lld.fraction, p.lld.threshold_mm, p.lld.device_cap_mm) == (0.6, 3.0, 6.0)
    assert p.lld.functional_fraction == 0.0


def test_schema_is_json_and_carries_units_and_sources():
    schema = params.schema()
    text = json.dumps(schema)
    assert set(schema["properties"]) == {key.partition(".")[0] for key in params.keys()}
    assert '"unit": "mm"' in text and '"source": "kirby_1992"' in text


def test_digest_is_stable_and_tracks_every_change():
    assert params.digest(params.defaults()) == params.digest(params.defaults())
    seen = {params.digest(params.defaults())}
    for key in ("arch.target_mm", "lld.fraction", "skive.cap_mm"):
        spec = params.describe(key)
        seen.add(params.digest(params.with_overrides(params.defaults(), {key: spec["max"]})))
    assert len(seen) == 4


def test_bibliography_entries_are_citable():
    for key, entry in params.bibliography().items():
        assert entry["cite"].strip(), key
        assert entry.get("doi", "10.").startswith("10."), key


# --- every invalid parameter is refused with field, value and what is allowed ---

def test_out_of_bounds_in_a_file_names_field_value_and_range(tmp_path):
    path = write(tmp_path, "[arch]\ntarget_mm = 99\n")
    message = refused(params.load, path)
    assert str(path) in message
    assert "arch.target_mm = 99" in message and "5.0..30.0 mm" in message


def test_below_the_minimum_names_field_value_and_range():
    message = refused(params.with_overrides, params.defaults(), {"lld.fraction": 0.1})
    assert "lld.fraction = 0.1" in message and "0.3..1.0" in message


def test_not_a_number_is_refused_with_the_range(tmp_path):
    message = refused(params.load, write(tmp_path, '[skive]\ncap_mm = "6"\n'))
    assert 'skive.cap_mm = "6"' in message and "2.0..8.0 mm" in message


def test_a_switch_given_for_a_number_is_refused(tmp_path):
    message = refused(params.load, write(tmp_path, "[arch]\ntarget_mm = true\n"))
    assert "arch.target_mm = true" in message and "a number" in message


def test_a_number_given_for_a_switch_is_refused(tmp_path):
    message = refused(params.load, write(tmp_path, "[cavus]\nfirst_ray_cutout = 1\n"))
    assert "cavus.first_ray_cutout = 1" in message and "true or false" in message


def test_unknown_key_in_a_file_lists_the_known_ones(tmp_path):
    message = refused(params.load, write(tmp_path, "[arch]\ntarget = 16\n"))
    assert "unknown parameter 'arch.target'" in message and "arch.target_mm" in message


def test_unknown_group_in_a_file_is_refused(tmp_path):
    message = refused(params.load, write(tmp_path, "[arches]\ntarget_mm = 16\n"))
    assert "unknown parameter 'arches'" in message and "lld.fraction" in message


def test_a_group_given_as_a_value_says_to_write_a_table(tmp_path):
    message = refused(params.load, write(tmp_path, "arch = 3\n"))
    assert "arch = 3" in message and "[arch] table" in message


@pytest.mark.parametrize("key", ["arch.nope", "nodot", "arches.target_mm"])
def test_unknown_override_key_lists_the_known_ones(key):
    message = refused(params.with_overrides, params.defaults(), {key: 1})
    assert f"unknown parameter {key!r}" in message and "skive.cap_mm" in message


def test_bad_toml_says_to_fix_the_syntax(tmp_path):
    message = refused(params.load, write(tmp_path, "[arch\ntarget_mm = 16\n"))
    assert "not valid TOML" in message and "fix the syntax" in message


def test_heel_cup_depths_must_not_decrease(tmp_path):
    message = refused(params.load, write(tmp_path, "[heel_cup]\nstandard_mm = 16\n"))
    assert "heel_cup: standard_mm 16, with_skive_mm 14" in message
    assert "standard <= with_skive <= deep" in message


def test_missing_file_says_to_check_the_path(tmp_path):
    message = refused(params.load, tmp_path / "nowhere.toml")
    assert "not found" in message and "check the path" in message


# --- relations between parameters: each refused with the fields, values and the rule ---

@pytest.mark.parametrize(("values", "fragments"), [
    ({"classification.arch_index_low": 0.20},
     ["classification: arch_index_low = 0.2 and arch_index_high = 0.21",
      "need arch_index_low > arch_index_high"]),
    ({"classification.arch_index_low": 0.21},  # equal: no normal band
     ["need arch_index_low > arch_index_high"]),
    ({"classification.ahi_low": 0.38},
     ["ahi_low = 0.38 and ahi_high = 0.37", "need ahi_low < ahi_high"]),
    ({"classification.pronated_deg": 0, "classification.supinated_deg": 0},
     ["pronated_deg = 0 and supinated_deg = 0", "need pronated_deg > supinated_deg"]),
    ({"classification.pronated_deg": 10},
     ["skive.start_deg = 8 and classification.pronated_deg = 10",
      "need skive.start_deg >= classification.pronated_deg"]),
    ({"device.top_cover_mm": 4},
     ["cavus.top_cover_mm = 3 and device.top_cover_mm = 4",
      "need cavus.top_cover_mm >= device.top_cover_mm"]),
])
def test_broken_relations_name_the_fields_values_and_the_rule(values, fragments):
    message = refused(params.with_overrides, params.defaults(), values)
    for fragment in fragments:
        assert fragment in message, message


def test_every_broken_relation_is_named_at_once():
    message = refused(params.with_overrides, params.defaults(), {
        "classification.arch_index_low": 0.2, "classification.ahi_low": 0.38})
    assert "need arch_index_low > arch_index_high" in message
    assert "need ahi_low < ahi_high" in message


def test_a_relation_broken_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path, "[skive]\nstart_deg = 5\n[classification]\npronated_deg = 6\n")
    message = refused(params.load, path)
    assert message.startswith(f"{path}: skive.start_deg = 5")


def test_relations_at_their_limits_are_allowed():
    p = params.with_overrides(params.defaults(), {
        "skive.start_deg": 6, "classification.pronated_deg": 6,
        "cavus.top_cover_mm": 2, "device.top_cover_mm": 2})
    assert (p.skive.start_deg, p.cavus.top_cover_mm) == (6.0, 2.0)


# --- every bound of every parameter is enforced with a message naming it ---

NUMBERS = [key for key in params.keys() if params.describe(key)["unit"] not in ("bool", "choice")]


@pytest.mark.parametrize("key", NUMBERS)
def test_every_number_is_refused_beyond_either_bound_with_its_range(key):
    spec = params.describe(key)
    for beyond in (spec["min"] - 1.0, spec["max"] + 1.0):
        message = refused(params.with_overrides, params.defaults(), {key: beyond})
        assert f"{key} = {beyond!r}" in message
        assert f"{spec['min']}..{spec['max']} {spec['unit']}" in message


def test_caps_cannot_be_negative():
    caps = [key for key in NUMBERS if "cap" in key.partition(".")[2]]
    assert len(caps) >= 5
    for key in caps:
        assert params.describe(key)["min"] >= 0.0, key
        assert f"{key} = -1.0" in refused(params.with_overrides, params.defaults(), {key: -1.0})


# --- the command ---

def test_params_command_dumps_the_shipped_file_and_the_schema(capsys):
    from orthocad.cli import main

    assert main(["params", "--dump"]) == 0
    shipped = resources.files("orthocad").joinpath("data/defaults.toml").read_text("utf-8")
    assert capsys.readouterr().out == shipped
    assert main(["params", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == params.schema()


def test_params_command_checks_a_file_with_exit_0_or_2(capsys, tmp_path):
    from orthocad.cli import main

    good = write(tmp_path, "[lld]\nfraction = 0.5\n")
    assert main(["params", "--check", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[classification]\narch_index_low = 0.2\n")
    assert main(["params", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "need arch_index_low > arch_index_high" in err and err.count("\n") == 1
