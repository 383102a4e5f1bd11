"""Job configs checked against the schema their plugin declares in plugin.toml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pollerd.config.manifest import load_manifest
from pollerd.config.setup import load_setup
from pollerd.errors import ManifestError

REPO = Path(__file__).parents[2]
MANIFEST = """\
[plugin]
id = "probe"
version = "0.1.0"

[plugin.entrypoint]
command = "python"
args = ["probe.py"]

[plugin.poller]
kinds = ["probe"]
lifecycle = "ephemeral"

[plugin.poller.config_schema]
type = "object"
required = ["url"]
additionalProperties = false

[plugin.poller.config_schema.properties.url]
type = "string"

[plugin.poller.config_schema.properties.limits]
type = "object"
properties = {count = {type = "integer", minimum = 1}}
"""


def write(tmp_path: Path, jobs: str, manifest: str = MANIFEST) -> Path:
    (tmp_path / "plugins" / "probe").mkdir(parents=True)
    (tmp_path / "plugins" / "probe" / "plugin.toml").write_text(manifest)
    path = tmp_path / "pollers.yaml"
    path.write_text("version: 1\njobs:\n" + textwrap.dedent(jobs))
    return path


def test_a_job_config_the_schema_refuses_breaks_the_job_with_file_line_and_field(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
          - id: typo
            kind: probe
            schedule: {every: 1m}
            config:
              ulr: https://example.org
              limits:
                count: 0
          - id: good
            kind: probe
            schedule: {every: 1m}
            config: {url: https://example.org, limits: {count: 3}}
        """,
    )

    setup = load_setup(path, {})

    assert [job.id for job in setup.jobs] == ["good"]
    (broken,) = setup.broken
    assert broken.problems == (
        f"{path}:6: jobs[0].config.url: required",
        f"{path}:7: jobs[0].config.ulr: unknown key; did you mean 'url'?",
        f"{path}:9: jobs[0].config.limits.count: 0 is less than the minimum of 1",
    )


def test_a_job_without_config_is_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, "  - {id: bare, kind: probe, schedule: {every: 1m}}\n")

    (broken,) = load_setup(path, {}).broken

    assert broken.reason == f"{path}:3: jobs[0].config.url: required"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ('type = "array"', "the schema's type must be 'object'"),
        ('type = "object"\nrequired = "url"', "not a valid JSON Schema at required"),
    ],
)
def test_an_invalid_schema_is_a_manifest_error_at_its_line(
    tmp_path: Path, schema: str, message: str
) -> None:
    head = MANIFEST.split("[plugin.poller.config_schema]")[0]
    path = write(tmp_path, "", manifest=f"{head}[plugin.poller.config_schema]\n{schema}\n")

    with pytest.raises(ManifestError) as caught:
        load_manifest(path.parent / "plugins" / "probe" / "plugin.toml")

    (problem,) = caught.value.problems
    assert problem.startswith(f"{path.parent}/plugins/probe/plugin.toml:13: ")
    assert "plugin.poller.config_schema" in problem and message in problem


@pytest.mark.parametrize("plugin", ["feeds", "files"])
def test_the_shipped_plugins_declare_a_config_schema(plugin: str) -> None:
    manifest = load_manifest(REPO / "plugins" / plugin / "plugin.toml")

    assert manifest.config_schema is not None
    assert manifest.config_schema["additionalProperties"] is False


def test_the_sample_config_passes_the_shipped_schemas() -> None:
    setup = load_setup(REPO / "pollers.yaml", {})

    assert setup.jobs and not setup.broken
