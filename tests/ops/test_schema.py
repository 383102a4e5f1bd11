"""`pollerd schema`: JSON Schemas that accept what pollerd accepts and reject what it refuses."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pollerd.config.duration import parse_duration
from pollerd.ops.schema import DURATION_PATTERN, plugin_schema, pollers_schema

REPO = Path(__file__).parents[2]
GUIDE = REPO / "docs" / "operator-guide.md"
COMMAND_TIMEOUT_S = 30.0


def as_json(data: Any) -> Any:
    """What a YAML-aware editor checks: YAML timestamps are strings there."""
    return json.loads(
        json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, date) else v)
    )


@functools.cache
def _printed(which: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pollerd", "schema", which],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=True,
    ).stdout


def schema_from_the_cli(which: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_printed(which))  # a fresh copy for each caller
    return loaded


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(as_json(document))
    ]


def guide_example() -> Any:
    text = GUIDE.read_text()
    section = text[text.index("### 1.1 A complete example") :]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]


def test_the_schemas_are_valid_json_schemas() -> None:
    jsonschema.Draft202012Validator.check_schema(schema_from_the_cli("pollers"))
    jsonschema.Draft202012Validator.check_schema(schema_from_the_cli("plugin"))


def test_pollerd_schema_pollers_accepts_the_sample_and_the_guides_example() -> None:
    schema = schema_from_the_cli("pollers")

    assert errors(schema, yaml.safe_load((REPO / "pollers.yaml").read_text())) == []
    assert errors(schema, guide_example()) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"jobz": []}, "jobz"),
        ({"jobs": [{"id": "a", "kind": "k", "schedule": {"every": "10 seconds"}}]}, "every"),
        ({"jobs": [{"id": "a", "kind": "k", "schedule": {"every": "5s1m"}}]}, "every"),
        (
            {"jobs": [{"id": "a", "kind": "k", "schedule": {"every": "1s"}, "overlap": "often"}]},
            "often",
        ),
        ({"defaults": {"retry": {"attempts": "3"}}}, "attempts"),
        ({"defaults": {"id": "x"}}, "id"),
        ({"store": "postgres"}, "postgres"),
        ({"shutdown_grace": "-5s"}, "-5s"),
    ],
)
def test_pollerd_schema_pollers_rejects_what_pollerd_refuses(
    change: dict[str, Any], where: str
) -> None:
    document = {**yaml.safe_load((REPO / "pollers.yaml").read_text()), **change}

    found = errors(schema_from_the_cli("pollers"), document)

    assert found and any(where in line for line in found), found


@pytest.mark.parametrize(
    "text",
    [
        "500ms",
        "10s",
        "5m",
        "2h",
        "1d",
        "1h30m",
        "1d2h3m4s5ms",
        "1.5h",
        " 10s ",
        "10",
        "0.5",
        ".5s",
        "0s",
    ],
)
def test_the_duration_pattern_accepts_what_parse_duration_reads(text: str) -> None:
    parse_duration(text)

    assert re.match(DURATION_PATTERN, text)


@pytest.mark.parametrize(
    "text", ["5s1m", "10 seconds", "-5s", "", "ms", "1w", "s5", "1h1h", "5 m s"]
)
def test_the_duration_pattern_rejects_what_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)

    assert not re.match(DURATION_PATTERN, text)


def test_pollerd_schema_plugin_accepts_the_shipped_manifests_and_rejects_a_bad_one() -> None:
    schema = schema_from_the_cli("plugin")
    manifests = sorted(REPO.glob("plugins/*/plugin.toml"))
    bad = tomllib.loads(manifests[0].read_text())
    bad["plugin"]["poller"]["tick_timeout"] = "thirty seconds"

    assert manifests
    for path in manifests:
        assert errors(schema, tomllib.loads(path.read_text())) == [], path
    assert any("tick_timeout" in line for line in errors(schema, bad))


def test_the_module_functions_are_what_the_cli_prints() -> None:
    assert schema_from_the_cli("pollers") == as_json(pollers_schema())
    assert schema_from_the_cli("plugin") == as_json(plugin_schema())
