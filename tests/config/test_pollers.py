from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pollerd.config.pollers import BreakerPolicy, RetryPolicy, ServiceConfig, load_config
from pollerd.config.schedule import AtSchedule, CronSchedule, EverySchedule
from pollerd.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "pollers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ServiceConfig:
    return load_config(write(tmp_path, text), environ or {})


def problems_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return caught.value.problems


MINIMAL = """
version: 1
jobs:
  - id: a
    kind: k
    schedule: {every: 10s}
"""


def test_a_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)

    assert config.path == tmp_path / "pollers.yaml"
    assert config.version == 1
    assert config.nats.url == "embedded" and config.nats.embedded
    assert config.store.type == "sqlite"
    assert config.state_dir == tmp_path / ".pollerd"
    assert config.plugin_dirs == (tmp_path / "plugins",)
    assert (config.http.enabled, config.http.host, config.http.port) == (True, "127.0.0.1", 9180)
    assert config.http.token is None
    assert config.shutdown_grace_s == 10.0
    assert config.max_cursor_bytes == 262144
    assert config.broken == ()
    (job,) = config.jobs
    assert job.id == "a" and job.kind == "k" and job.line == 3
    assert job.schedule == EverySchedule(interval_s=10.0)
    assert job.timezone.key == "UTC"
    assert (job.jitter_s, job.tick_timeout_s, job.target) == (0.0, None, "")
    assert (job.paused, job.enabled, job.config) == (False, True, {})
    assert (job.overlap, job.catchup, job.max_catchup) == ("skip", "latest", 10)
    assert job.retry == RetryPolicy(attempts=3, initial_s=1.0, max_s=30.0)
    assert job.breaker == BreakerPolicy(threshold=5, cooldown_s=30.0, max_cooldown_s=600.0)


def test_every_job_field_is_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - id: feed-main_1
            kind: rss
            schedule: {cron: "30 7 * * 1-5"}
            timezone: Europe/Paris
            jitter: 2s
            tick_timeout: 1m30s
            target: agent-7
            paused: true
            enabled: false
            config: {url: "http://x", since: 2024-01-02, tags: [a, b]}
            overlap: cancel_other
            catchup: all
            max_catchup: 3
            retry: {attempts: 5, initial: 500ms, max: 1m}
            breaker: {threshold: 2, cooldown: 10s, max_cooldown: 1h}
          - id: once
            kind: rss
            schedule: {at: "2030-01-02T03:04:05+02:00"}
        """,
    )

    job, once = config.jobs
    assert job.schedule == CronSchedule(expression="30 7 * * 1-5")
    assert job.timezone.key == "Europe/Paris"
    assert (job.jitter_s, job.tick_timeout_s, job.target) == (2.0, 90.0, "agent-7")
    assert (job.paused, job.enabled) == (True, False)
    assert job.config == {"url": "http://x", "since": "2024-01-02", "tags": ["a", "b"]}
    assert (job.overlap, job.catchup, job.max_catchup) == ("cancel_other", "all", 3)
    assert job.retry == RetryPolicy(attempts=5, initial_s=0.5, max_s=60.0)
    assert job.breaker == BreakerPolicy(threshold=2, cooldown_s=10.0, max_cooldown_s=3600.0)
    assert job.line_of("timezone") == 6
    assert once.schedule == AtSchedule(
        at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    )


def test_an_unquoted_yaml_timestamp_with_an_offset_is_an_at_schedule(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - {id: once, kind: k, schedule: {at: 2030-01-02T03:04:05Z}}
        """,
    )

    assert config.jobs[0].schedule == AtSchedule(at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_an_unknown_top_level_key_is_fatal_and_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstate_dri: x\njobs: []\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.problems == [f"{path}:2: state_dri: unknown key; did you mean 'state_dir'?"]


def test_an_unknown_key_inside_a_job_breaks_only_that_job(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - id: good
            kind: k
            schedule: {every: 1s}
          - id: bad
            kind: k
            schedule: {every: 1s}
            colour: blue
        """,
    )

    assert [job.id for job in config.jobs] == ["good"]
    (broken,) = config.broken
    assert (broken.id, broken.kind, broken.line) == ("bad", "k", 6)
    assert broken.reason == (
        f"{config.path}:9: jobs[1].colour: unknown key; known keys: align, breaker, catchup, "
        "config, enabled, history, id, jitter, kind, max_catchup, overlap, paused, retry, "
        "schedule, target, tick_timeout, timezone"
    )


def test_an_unknown_key_inside_a_schedule_suggests_the_close_one(tmp_path: Path) -> None:
    config = load(
        tmp_path, "version: 1\njobs:\n  - id: a\n    kind: k\n    schedule:\n      evry: 1s\n"
    )

    assert config.broken[0].problems == (
        f"{config.path}:6: jobs[0].schedule.evry: unknown key; did you mean 'every'?",
    )


def test_a_bad_cron_expression_breaks_the_job_and_names_its_line(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - id: a
            kind: k
            schedule:
              cron: "61 * * * *"
        """,
    )

    (broken,) = config.broken
    assert broken.reason.startswith(f"{config.path}:6: jobs[0].schedule.cron: ")
    assert len(broken.reason) > len(f"{config.path}:6: jobs[0].schedule.cron: ")


def test_a_bad_timezone_breaks_the_job(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - id: a
            kind: k
            schedule: {every: 1s}
            timezone: Europe/Atlantis
        """,
    )

    assert config.broken[0].reason == (
        f"{config.path}:6: jobs[0].timezone: unknown time zone 'Europe/Atlantis'; "
        "use an IANA name such as 'UTC' or 'Europe/Paris'"
    )


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("{every: 0s}", "schedule.every: must be greater than 0, got '0s'"),
        (
            "{every: soon}",
            "schedule.every: invalid duration 'soon': expected a number with a unit, "
            "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        ("{}", "schedule: set exactly one of every, cron or at"),
        (
            "{every: 0.0000001}",
            "schedule: an every schedule needs a positive interval, got 1e-07 seconds",
        ),
        (
            "{every: 1s, cron: '* * * * *'}",
            "schedule: set exactly one of every, cron or at (found every, cron)",
        ),
        (
            "{at: 2030-01-02T03:04:05}",
            "schedule.at: time '2030-01-02T03:04:05' has no UTC offset; "
            "add one, e.g. 'Z' or '+02:00'",
        ),
        (
            "{at: 2030-01-02}",
            "schedule.at: '2030-01-02' is a date; give a time with an offset, "
            "e.g. '2030-01-02T09:00:00Z'",
        ),
        (
            "{at: 2030-13-02}",
            "schedule.at: invalid time '2030-13-02': expected RFC 3339 such as "
            "'2025-06-01T09:00:00+02:00'",
        ),
        (
            "every 5s",
            "schedule: must be a mapping, got 'every 5s'",
        ),
    ],
)
def test_an_invalid_schedule_breaks_the_job(tmp_path: Path, schedule: str, message: str) -> None:
    config = load(
        tmp_path, f"version: 1\njobs:\n  - id: a\n    kind: k\n    schedule: {schedule}\n"
    )

    assert config.broken[0].reason == f"{config.path}:5: jobs[0].{message}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "jitter: 5x",
            "jitter: invalid duration '5x': expected a number with a unit, "
            "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        ("tick_timeout: 0s", "tick_timeout: must be greater than 0, got '0s'"),
        ("overlap: skp", "overlap: must be 'skip', 'buffer_one' or 'cancel_other', got 'skp'"),
        ("paused: maybe", "paused: must be a valid boolean, got 'maybe'"),
        (
            "target: off",
            "target: must be a string, got False; quote it (unquoted yes/no/on/off are booleans "
            "in YAML)",
        ),
        ("max_catchup: 0", "max_catchup: must be greater than or equal to 1, got 0"),
        ("retry: {initial: 10s, max: 1s}", "retry: max (1s) must not be shorter than initial"),
        (
            "config: {when: !!set {a}}",
            "config: when: a set cannot be sent to a plugin; "
            "use strings, numbers, booleans, null, lists and mappings",
        ),
    ],
)
def test_an_invalid_job_field_breaks_the_job(tmp_path: Path, line: str, message: str) -> None:
    config = load(
        tmp_path,
        f"version: 1\njobs:\n  - id: a\n    kind: k\n    schedule: {{every: 1s}}\n    {line}\n",
    )

    assert config.broken[0].reason == f"{config.path}:6: jobs[0].{message}"


def test_an_invalid_job_id_and_a_missing_kind_are_both_reported(tmp_path: Path) -> None:
    config = load(tmp_path, "version: 1\njobs:\n  - id: Bad Id\n    schedule: {every: 1s}\n")

    assert config.broken[0].problems == (
        f"{config.path}:3: jobs[0].id: invalid job id 'Bad Id': use 1-128 lowercase letters, "
        "digits, '_' or '-', starting with a letter or digit",
        f"{config.path}:3: jobs[0].kind: required",
    )
    assert config.broken[0].id == "Bad Id"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "id: node.dotted",
            "3: jobs[0].id: invalid job id 'node.dotted': no '.' (the id is one token of the "
            "events subject pollerd.events.<kind>.<job_id>); write 'node-dotted'",
        ),
        (
            "kind: feeds.rss",
            "4: jobs[0].kind: invalid kind 'feeds.rss': kinds are lowercase letters, digits and "
            "'_', starting with a letter (one token of the events subject "
            "pollerd.events.<kind>.<job_id>)",
        ),
    ],
)
def test_a_dot_in_a_job_id_or_kind_breaks_the_job_naming_the_line_and_field(
    tmp_path: Path, line: str, message: str
) -> None:
    fields = {"id": "id: node", "kind": "kind: rss"}
    fields[line.split(":")[0]] = line
    job = f"  - {fields['id']}\n    {fields['kind']}\n    schedule: {{every: 1s}}\n"

    config = load(tmp_path, "version: 1\njobs:\n" + job)

    assert config.broken[0].problems == (f"{config.path}:{message}",)


def test_a_duplicate_job_id_breaks_the_second_job_only(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - {id: a, kind: k, schedule: {every: 1s}}
          - {id: b, kind: k, schedule: {every: 1s}}
          - {id: a, kind: other, schedule: {every: 2s}}
        """,
    )

    assert [job.id for job in config.jobs] == ["a", "b"]
    assert config.jobs[0].kind == "k"
    (broken,) = config.broken
    assert (
        broken.reason
        == f"{config.path}:5: jobs[2].id: duplicate job id 'a' (first defined at line 3)"
    )


def test_one_broken_job_leaves_the_others_running(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - {id: a, kind: k, schedule: {every: 1s}}
          - {id: b, kind: k, schedule: {every: -1s}}
          - just text
          - {id: c, kind: k, schedule: {every: 1s}}
        """,
    )

    assert [job.id for job in config.jobs] == ["a", "c"]
    assert [job.index for job in config.jobs] == [0, 3]
    assert [(broken.id, broken.line) for broken in config.broken] == [("b", 4), (None, 5)]
    assert config.broken[1].reason == (
        f"{config.path}:5: jobs[2]: a job must be a mapping with id, kind and schedule, "
        "got 'just text'"
    )


def test_defaults_are_merged_into_each_job_and_the_job_wins(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        defaults:
          timezone: Europe/Paris
          jitter: 3s
          catchup: all
          max_catchup: 4
          retry: {attempts: 7, max: 2m}
          breaker: {threshold: 9}
        jobs:
          - id: plain
            kind: k
            schedule: {every: 1s}
          - id: own
            kind: k
            schedule: {every: 1s}
            timezone: UTC
            retry: {initial: 5s}
            breaker: {threshold: 1, cooldown: 1m}
        """,
    )

    plain, own = config.jobs
    assert (plain.timezone.key, plain.jitter_s, plain.catchup, plain.max_catchup) == (
        "Europe/Paris",
        3.0,
        "all",
        4,
    )
    assert plain.retry == RetryPolicy(attempts=7, initial_s=1.0, max_s=120.0)
    assert plain.breaker == BreakerPolicy(threshold=9, cooldown_s=30.0, max_cooldown_s=600.0)
    assert (own.timezone.key, own.jitter_s) == ("UTC", 3.0)
    assert own.retry == RetryPolicy(attempts=7, initial_s=5.0, max_s=120.0)
    assert own.breaker == BreakerPolicy(threshold=1, cooldown_s=60.0, max_cooldown_s=600.0)


def test_a_job_made_invalid_by_a_default_names_the_line_in_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        defaults:
          retry: {max: 2s}
        jobs:
          - {id: a, kind: k, schedule: {every: 1s}, retry: {initial: 5s}}
        """,
    )

    assert config.broken[0].reason == (
        f"{config.path}:5: jobs[0].retry: max (2s) must not be shorter than initial"
    )


def test_invalid_defaults_are_fatal(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        version: 1
        defaults:
          kind: k
          schedule: {every: 1s}
          timezone: Nowhere
          colour: red
        jobs: []
        """,
    )

    path = tmp_path / "pollers.yaml"
    assert problems == [
        f"{path}:3: defaults.kind: cannot be set in defaults; set it on each job",
        f"{path}:4: defaults.schedule: cannot be set in defaults; set it on each job",
        f"{path}:5: defaults.timezone: unknown time zone 'Nowhere'; "
        "use an IANA name such as 'UTC' or 'Europe/Paris'",
        f"{path}:6: defaults.colour: unknown key; known keys: align, breaker, catchup, enabled, "
        "history, jitter, max_catchup, overlap, paused, retry, target, tick_timeout, timezone",
    ]


def test_a_fatal_error_lists_every_problem_including_broken_jobs(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        version: 2
        store: redis
        jobs:
          - {id: a, kind: k, schedule: {every: x}}
        max_cursor_bytes: 0
        """,
    )

    path = tmp_path / "pollers.yaml"
    assert problems == [
        f"{path}:1: version: unsupported version 2; this pollerd reads version 1",
        f"{path}:2: store: unsupported store 'redis'; supported: sqlite, nats-kv",
        f"{path}:4: jobs[0].schedule.every: invalid duration 'x': expected a number with a unit, "
        "e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        f"{path}:5: max_cursor_bytes: must be greater than or equal to 1, got 0",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: []\n", "1: version: required"),
        ("", "1: expected a mapping with 'version: 1' and 'jobs'; the file is empty"),
        ("- a\n- b\n", "1: expected a mapping with 'version: 1' and 'jobs'; got list"),
        ("version: 1\njobs: {a: 1}\n", "2: jobs: must be a valid list, got {'a': 1}"),
        ("version: 1\nversion: 1\n", "2: version: duplicate key 'version' (first set at line 1)"),
        (
            "version: 1\njobs:\n  - id: a\n   kind: b\n",
            "4: malformed YAML: did not find expected '-' indicator, "
            "while parsing a block collection",
        ),
        (
            "version: 1\nplugins: [a\n",
            "3: malformed YAML: did not find expected ',' or ']', while parsing a flow sequence",
        ),
    ],
)
def test_a_broken_file_is_fatal_and_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.problems == [f"{path}:{message}"]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", {})

    assert (
        str(caught.value)
        == f"{tmp_path / 'nope.yaml'}: no such file; create it or pass another one with -c"
    )


def test_a_duplicate_key_inside_a_job_breaks_that_job(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "version: 1\njobs:\n  - id: a\n    kind: k\n    kind: j\n    schedule: {every: 1s}\n",
    )

    assert config.broken[0].reason == (
        f"{config.path}:5: jobs[0].kind: duplicate key 'kind' (first set at line 4)"
    )


def test_yaml_anchors_and_merge_keys_can_share_job_settings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - &base {id: a, kind: k, schedule: {every: 1s}, config: {tags: [x, 1.5]}}
          - <<: *base
            id: b
            jitter: 2x
        """,
    )

    assert config.jobs[0].config == {"tags": ["x", 1.5]}
    assert config.broken[0].reason.startswith(f"{config.path}:6: jobs[1].jitter: ")


def test_a_yaml_alias_that_refers_to_itself_is_fatal(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "version: 1\njobs:\n  - &loop [*loop]\n")

    assert problems == [f"{tmp_path / 'pollers.yaml'}:3: a YAML alias refers to itself"]


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pollers.yaml"
    path.write_bytes(b"version: 1\n# caf\xe9\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.problems == [
        f"{path}: the file is not UTF-8 text (invalid continuation byte)"
    ]


# -- environment -------------------------------------------------------------------------------


def test_variables_are_substituted_before_parsing(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        # a comment naming ${NOT_SET_ANYWHERE} is left alone
        version: 1
        state_dir: ${STATE}
        nats: {url: "${NATS_URL:-embedded}", token: "${NATS_TOKEN:-}"}
        http: {listen: "127.0.0.1:${PORT:-9999}", token: "${ADMIN_TOKEN}"}
        jobs:
          - {id: a, kind: k, schedule: {every: 1s}, target: "$${NOT_A_VARIABLE}"}
        """,
        {"STATE": "/var/lib/pollerd", "ADMIN_TOKEN": "s3cret", "NATS_TOKEN": ""},
    )

    assert config.state_dir == Path("/var/lib/pollerd")
    assert config.nats.url == "embedded" and config.nats.token is None
    assert (config.http.port, config.http.token) == (9999, "s3cret")
    assert config.jobs[0].target == "${NOT_A_VARIABLE}"


def test_an_unset_variable_is_fatal_and_names_it_and_its_line(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        version: 1
        http:
          token: ${POLLERD_ADMIN_TOKEN}
        nats: ${NATS_URL} ${BAD NAME} ${OPEN
        """,
    )

    path = tmp_path / "pollers.yaml"
    assert problems == [
        f"{path}:3: environment variable 'POLLERD_ADMIN_TOKEN' is not set; "
        "set it or write ${POLLERD_ADMIN_TOKEN:-default}",
        f"{path}:4: environment variable 'NATS_URL' is not set; "
        "set it or write ${NATS_URL:-default}",
        f"{path}:4: invalid reference '${{BAD NAME}}': expected ${{NAME}} or ${{NAME:-default}}",
        f"{path}:4: '${{' without a closing '}}'; write $${{ for a '$'",
    ]


def test_lines_stay_true_when_a_value_spans_several_lines(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        jobs:
          - {id: a, kind: k, schedule: {every: 1s}, config: ${BLOCK}}
          - {id: b, kind: k, schedule: {every: nope}}
        """,
        {"BLOCK": "\n      {x: 1,\n       y: 2}"},
    )

    assert config.jobs[0].config == {"x": 1, "y": 2}
    assert config.broken[0].reason.startswith(f"{config.path}:4: jobs[1].schedule.every: ")


# -- nats, http, paths -------------------------------------------------------------------------


def test_nats_and_http_accept_the_string_forms(tmp_path: Path) -> None:
    config = load(tmp_path, "version: 1\nnats: nats://a:4222, tls://b:4222\nhttp: off\n")

    assert config.nats.url == "nats://a:4222,tls://b:4222" and not config.nats.embedded
    assert config.http.enabled is False


def test_nats_and_http_accept_the_mapping_forms(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        version: 1
        state_dir: state
        plugins: [../shared/plugins, /opt/plugins]
        nats:
          url: tls://nats.example:4222
          user: me
          password: pw
          creds: secrets/me.creds
          tls: {ca: ca.pem, cert: /etc/cert.pem, key: key.pem}
        http: {listen: "[::1]:0", token: t}
        shutdown_grace: 30s
        max_cursor_bytes: 1024
        """,
    )

    nats = config.nats
    assert (nats.url, nats.user, nats.password, nats.token) == (
        "tls://nats.example:4222",
        "me",
        "pw",
        None,
    )
    assert nats.creds == tmp_path / "secrets" / "me.creds"
    assert (nats.tls_ca, nats.tls_cert, nats.tls_key) == (
        tmp_path / "ca.pem",
        Path("/etc/cert.pem"),
        tmp_path / "key.pem",
    )
    assert (config.http.host, config.http.port, config.http.token) == ("::1", 0, "t")
    assert config.state_dir == tmp_path / "state"
    assert config.plugin_dirs == (tmp_path.parent / "shared" / "plugins", Path("/opt/plugins"))
    assert (config.shutdown_grace_s, config.max_cursor_bytes) == (30.0, 1024)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "nats: http://x",
            "2: nats.url: expected 'embedded' or nats:// / tls:// URLs "
            "(comma-separated), got 'http://x'",
        ),
        ("nats: {tls: {cert: c}}", "2: nats.tls: cert and key must be set together"),
        ("nats: {password: p}", "2: nats: user and password must be set together"),
        (
            "http: localhost",
            "2: http.listen: expected 'host:port' (e.g. '127.0.0.1:9180') "
            "or 'off', got 'localhost'",
        ),
        (
            "http: {listen: 127.0.0.1:99999}",
            "2: http.listen: expected 'host:port' "
            "(e.g. '127.0.0.1:9180') or 'off', got '127.0.0.1:99999'",
        ),
        ("http: {port: 1}", "2: http.port: unknown key; known keys: listen, token"),
        (
            "http: 9180",
            "2: http.listen: expected 'host:port' (e.g. '127.0.0.1:9180') or 'off', got 9180",
        ),
        ("nats: 4222", "2: nats.url: must be a valid string, got 4222"),
    ],
)
def test_bad_nats_or_http_settings_are_fatal(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, f"version: 1\n{text}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, {})

    assert caught.value.problems == [f"{path}:{message}"]


# -- config hash -------------------------------------------------------------------------------


def test_the_config_hash_ignores_where_the_job_is_written_but_not_what_it_says(
    tmp_path: Path,
) -> None:
    first = load(tmp_path, MINIMAL).jobs[0]
    moved = load(
        tmp_path,
        "# moved down\n\nversion: 1\njobs:\n  - {id: a, kind: k, schedule: {every: 10s}}\n",
    ).jobs[0]
    changed = load(tmp_path, MINIMAL.replace("every: 10s", "every: 11s")).jobs[0]
    via_defaults = load(tmp_path, MINIMAL + "defaults: {jitter: 1s}\n").jobs[0]

    assert moved.config_hash == first.config_hash
    assert moved == first
    assert changed.config_hash != first.config_hash
    assert via_defaults.config_hash != first.config_hash


@pytest.mark.parametrize(
    ("schedule", "expression"),
    [
        ("{cron: '0 9 * * 1-5', seconds: 30}", "30 0 9 * * 1-5"),
        ("{cron: '*/5 * * * *', seconds: '0,30'}", "0,30 */5 * * * *"),
    ],
)
def test_cron_seconds_are_a_separate_field(tmp_path: Path, schedule: str, expression: str) -> None:
    config = load(tmp_path, f"version: 1\njobs:\n  - {{id: a, kind: k, schedule: {schedule}}}\n")

    assert config.jobs[0].schedule == CronSchedule(expression)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("{every: 1m, seconds: 0}", "jobs[0].schedule: seconds goes with cron only"),
        (
            "{cron: '* * * * *', seconds: 75}",
            "jobs[0].schedule.seconds: invalid seconds '75': one cron field of seconds 0-59, "
            "such as '0', '*/15' or '0,30'",
        ),
    ],
)
def test_misused_cron_seconds_break_the_job(tmp_path: Path, schedule: str, message: str) -> None:
    config = load(tmp_path, f"version: 1\njobs:\n  - {{id: a, kind: k, schedule: {schedule}}}\n")

    assert config.broken[0].problems == (f"{config.path}:3: {message}",)
