"""spec.build.commands: validated in the spec, read from and written to Nuclio's function.yaml,
and keyed into one environment per command list."""

from __future__ import annotations

import pytest
import yaml

from sluice.errors import SpecError
from sluice.nuclio_config import from_nuclio, to_nuclio
from sluice.platform.build_env import commands_of, env_key, keys_in_use
from sluice.spec import MAX_BUILD_COMMANDS, parse_spec


def nuclio_function(**build: object) -> dict[str, object]:
    return {"apiVersion": "nuclio.io/v1", "kind": "Function", "metadata": {"name": "fn"},
            "spec": {"handler": "main:handler", "build": build}}


def test_spec_holds_build_commands_and_a_build_timeout():
    spec = parse_spec({"name": "f", "build": {"commands": ["pip install a", "pip install b"]}})
    assert spec.build is not None and spec.build.commands == ["pip install a", "pip install b"]
    assert spec.build.timeout == 600.0
    assert commands_of(spec) == ["pip install a", "pip install b"]


def test_a_spec_without_build_or_with_no_commands_has_none():
    assert commands_of(parse_spec({"name": "f"})) == []
    assert commands_of(parse_spec({"name": "f", "build": {"commands": []}})) == []


@pytest.mark.parametrize(("build", "message"), [
    ({"commands": ["pip install a", "   "]},
     "spec.build.commands.1: a build command is a shell command line"),
    ({"commands": ["pip install a\x00"]}, "spec.build.commands.0: a build command cannot hold"),
    ({"commands": ["x" * 9000]}, "spec.build.commands.0: String should have at most 8192"),
    ({"commands": ["pip install a"] * (MAX_BUILD_COMMANDS + 1)},
     f"spec.build.commands: List should have at most {MAX_BUILD_COMMANDS} items"),
    ({"commands": "pip install a"}, "spec.build.commands: Input should be a valid list"),
    ({"commands": [3]}, "spec.build.commands.0: Input should be a valid string"),
    ({"commands": ["pip install a"], "timeout": 0}, "spec.build.timeout: Input should be greater"),
    ({"commands": [], "image": "x"},
     "spec.build.image: unknown field (allowed: commands, timeout)"),
])
def test_bad_build_fields_are_named(build, message):
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "f", "build": build}, prefix="spec.")
    assert message in str(info.value)


def test_nuclio_commands_become_build_commands():
    out = from_nuclio(nuclio_function(commands=["pip install a", "pip install b==1"],
                                      noBaseImagesPull=True, buildTimeoutSeconds=900))
    assert out["build"] == {"commands": ["pip install a", "pip install b==1"], "timeout": 900}
    assert parse_spec(out).build.timeout == 900.0  # type: ignore[union-attr]


def test_nuclio_jupyter_single_string_is_one_command_and_empty_lists_build_nothing():
    # `%nuclio config spec.build.commands = "pip install x"` sets a string
    assert from_nuclio(nuclio_function(commands="pip install x"))["build"] == {
        "commands": ["pip install x"]}
    assert "build" not in from_nuclio(nuclio_function(commands=[], buildTimeoutSeconds=60))


@pytest.mark.parametrize(("commands", "message"), [
    ({"pip": "install"}, "spec.build.commands: must be a list of shell commands"),
    (["pip install a", 7], "spec.build.commands[1]: must be a shell command line (a string)"),
])
def test_bad_nuclio_commands_name_the_field(commands, message):
    with pytest.raises(SpecError) as info:
        from_nuclio(nuclio_function(commands=commands))
    assert message in str(info.value)


def test_build_commands_round_trip_through_nuclio():
    original = parse_spec({"name": "rt", "handler": "m:h",
                           "build": {"commands": ["pip install a"], "timeout": 120}})
    rendered = to_nuclio(original.model_dump(mode="json", exclude_none=True))
    assert rendered["spec"]["build"] == {"commands": ["pip install a"],
                                         "buildTimeoutSeconds": 120}
    assert parse_spec(from_nuclio(yaml.safe_load(yaml.safe_dump(rendered)))) == original


def test_one_key_per_command_list():
    assert env_key(["pip install a"]) == env_key(["pip install a"])
    assert env_key(["pip install a"]) != env_key(["pip install b"])
    assert env_key(["pip install a", "pip install b"]) != env_key(["pip install b",
                                                                   "pip install a"])
    specs = [{"name": "a", "build": {"commands": ["pip install a"]}}, {"name": "b"},
             {"name": "c", "build": {"commands": []}}]
    assert keys_in_use(specs) == {env_key(["pip install a"])}
