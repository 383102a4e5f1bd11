"""A reader that loads the same pollers.yaml again reuses the jobs written as in its last load,
and what it loads is what a fresh load of the file gives, lines and messages included."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pollerd.config.jobcache import JobCache
from pollerd.config.pollers import JobConfig, ServiceConfig, load_config
from pollerd.config.yamlfile import REUSED, parse_yaml
from pollerd.errors import ConfigError

HEAD = """
version: 1
defaults:
  jitter: 1s
jobs:
"""
JOB_A = """
  - id: a
    kind: k
    schedule: {every: 10s}
    config:
      feeds:
        - url: https://example.org/a
"""
JOB_B = """
  - id: b
    kind: k
    schedule: {every: 20s}
"""
JOB_C = "  - {id: c, kind: k, schedule: {cron: '*/5 * * * *'}}\n"


def text_of(*parts: str) -> str:
    return "".join(
        textwrap.dedent(part).lstrip("\n") if part is HEAD else part.lstrip("\n") for part in parts
    )


def load_twice(path: Path, cache: JobCache) -> tuple[ServiceConfig, ServiceConfig]:
    """The file loaded with ``cache``, and loaded fresh."""
    return load_config(path, {}, cache), load_config(path, {})


def where(job: JobConfig) -> tuple[object, ...]:
    return (job.line, job.index, dict(job.field_lines), dict(job.config_lines), job.config_hash)


def assert_as_fresh(cached: ServiceConfig, fresh: ServiceConfig) -> None:
    assert cached.jobs == fresh.jobs
    assert [where(job) for job in cached.jobs] == [where(job) for job in fresh.jobs]
    assert cached.broken == fresh.broken


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "pollers.yaml"


def test_a_job_is_reused_when_only_another_job_changed(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B, JOB_C))
    before = load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A, JOB_B.replace("20s", "30s"), JOB_C))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.jobs[0] is before.jobs[0] and cached.jobs[2] is before.jobs[2]
    assert cached.jobs[1].schedule != before.jobs[1].schedule
    assert cached.jobs[1].config_hash != before.jobs[1].config_hash


def test_a_job_that_moved_keeps_the_lines_of_where_it_is_now(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B))
    before = load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_C, "  # a comment\n", JOB_B, JOB_A))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    moved = cached.jobs[2]
    assert (moved.id, moved.line, moved.index) == ("a", 10, 2)
    assert moved.line_of("schedule") == 12 and moved.config_lines[("feeds", 0, "url")] == 15
    assert moved.config is before.jobs[0].config  # reused, not validated again


def test_a_changed_job_is_validated_again_and_its_error_names_its_line(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A, JOB_B.replace("every: 20s", "every: soon")))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    (broken,) = cached.broken
    assert broken.reason.startswith(f"{path}:13: jobs[1].schedule.every: ")


def test_jobs_written_as_a_flow_sequence_are_reused_too(path: Path) -> None:
    job_a = "{{id: a, kind: k, config: {{x: [1, 2]}}, schedule: {{every: 1s}}}}"
    flow = "version: 1\njobs: [\n{}  " + job_a + ",\n  {}]\n"
    cache = JobCache()
    path.write_text(flow.format("", "{id: b, kind: k, schedule: {every: 2s}}"))
    before = load_config(path, {}, cache)
    path.write_text(flow.format("  {id: n, kind: k, schedule: {every: 1s}},\n", "{id: b}"))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.jobs[1].config is before.jobs[0].config
    assert cached.jobs[1].line == 4 and cached.broken[0].id == "b"


def test_a_copy_of_a_reused_job_is_a_duplicate_named_at_its_line(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A, JOB_B, JOB_B))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.broken[0].reason == (
        f"{path}:14: jobs[2].id: duplicate job id 'b' (first defined at line 11)"
    )


def test_changed_defaults_apply_to_every_job(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD.replace("jitter: 1s", "jitter: 1"), JOB_A, JOB_B))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert [job.jitter_s for job in cached.jobs] == [1.0, 1.0]


def test_defaults_that_only_compare_equal_are_other_defaults(path: Path) -> None:
    retry = "  retry: {attempts: 1}\n"
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A).replace("jobs:\n", retry + "jobs:\n"))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A).replace("jobs:\n", retry.replace("1", "true") + "jobs:\n"))

    with pytest.raises(ConfigError) as caught:
        load_config(path, {}, cache)

    assert "defaults.retry.attempts" in str(caught.value)


def test_a_job_with_an_alias_follows_what_its_anchor_says_now(path: Path) -> None:
    anchored = JOB_A.replace("config:", "config: &shared")
    aliased = JOB_B + "    config: *shared\n"
    cache = JobCache()
    path.write_text(text_of(HEAD, anchored, aliased))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD, anchored.replace("example.org/a", "example.org/z"), aliased))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.jobs[1].config == {"feeds": [{"url": "https://example.org/z"}]}


def test_a_refused_load_keeps_the_jobs_of_the_last_good_one(path: Path) -> None:
    cache = JobCache()
    path.write_text(text_of(HEAD, JOB_A, JOB_B))
    first = load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A, JOB_B) + "version: 2\n")
    with pytest.raises(ConfigError):
        load_config(path, {}, cache)
    path.write_text(text_of(HEAD, JOB_A, JOB_B))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.jobs[0] is first.jobs[0]


def test_only_items_of_jobs_without_aliases_or_anchors_are_skipped() -> None:
    text = (
        "jobs:\n"
        "  - {id: a, x: &x 1}\n"
        "  - {id: b, x: *x}\n"
        "  - id: c\n"
        "    y: [1, 2]\n"
        "  # a comment\n"
        "  - {id: d}\n"
        "other: [{id: a}]\n"
    )
    first = parse_yaml(text, "f", known=())

    document = parse_yaml(text, "f", known=set(first.sources.values()))

    assert sorted(first.sources) == [2, 3]
    assert document.data["jobs"] == [{"id": "a", "x": 1}, {"id": "b", "x": 1}, REUSED, REUSED]
    assert document.data["other"] == [{"id": "a"}]
    assert document.reused == 2
    assert [document.line_of(("jobs", at)) for at in range(4)] == [2, 3, 4, 7]
    assert document.sources == first.sources


def test_items_are_read_in_full_where_the_root_is_not_indexed_item_by_item() -> None:
    text = "base: &base {x: 1}\n<<: *base\njobs:\n  - {id: a}\n  - {id: b}\n"
    first = parse_yaml(text, "f", known=())

    document = parse_yaml(text, "f", known=set(first.sources.values()))

    assert document.data["jobs"] == [{"id": "a"}, {"id": "b"}]
    assert document.reused == 0 and document.sources == first.sources


@pytest.mark.parametrize(
    ("text", "line_map"),
    [
        ("%TAG !e! tag:example.org,2000:\n---\njobs:\n  - {id: a}\n", None),
        ("jobs:\n  - {id: a, note: 'x\n    y'}\n", [1, 2, 2]),  # a value spanning lines
    ],
)
def test_no_item_is_skipped_where_its_text_could_mean_other_data_or_lines(
    text: str, line_map: list[int] | None
) -> None:
    document = parse_yaml(text, "f", line_map, known=())

    assert document.sources == {}


def test_blank_lines_kept_by_a_block_scalar_are_part_of_the_job(path: Path) -> None:
    kept = "  - id: d\n    kind: k\n    schedule: {every: 1s}\n    target: |+\n      x\n\n"
    cache = JobCache()
    path.write_text(text_of(HEAD, kept, JOB_B))
    load_config(path, {}, cache)
    path.write_text(text_of(HEAD, kept + "\n", JOB_B))

    cached, fresh = load_twice(path, cache)

    assert_as_fresh(cached, fresh)
    assert cached.jobs[0].target == "x\n\n\n"
