from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pollerd.config.manifest import Entrypoint, Manifest, discover_manifests, load_manifest
from pollerd.errors import ManifestError

FEEDS = """
[plugin]
id = "feeds"
version = "0.1.0"
description = "RSS and Atom feeds"

[plugin.entrypoint]
command = "python"
args = ["-m", "feeds"]
env = ["HTTPS_PROXY"]

[plugin.poller]
kinds = ["rss", "atom"]
lifecycle = "long_lived"
subject_prefix = "acme.feeds"
max_concurrent_ticks = 4
tick_timeout = "1m"
"""

MINIMAL = """
[plugin]
id = "{id}"
version = "1"

[plugin.poller]
kinds = ["{kind}"]
lifecycle = "long_lived"
"""


def write_plugin(root: Path, folder: str, text: str) -> Path:
    path = root / folder / "plugin.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    return caught.value.problems


def test_a_full_manifest_is_read(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "feeds", FEEDS)

    manifest = load_manifest(path)

    assert manifest == Manifest(
        id="feeds",
        version="0.1.0",
        description="RSS and Atom feeds",
        path=path,
        entrypoint=Entrypoint(command="python", args=("-m", "feeds"), env=("HTTPS_PROXY",)),
        kinds=("rss", "atom"),
        lifecycle="long_lived",
        subject_prefix="acme.feeds",
        max_concurrent_ticks=4,
        tick_timeout_s=60.0,
    )
    assert manifest.folder == tmp_path / "feeds"
    assert manifest.tick_subject == "acme.feeds.tick"
    assert (manifest.kind_line("rss"), manifest.kind_line("atom")) == (12, 12)
    assert not manifest.external


def test_a_minimal_manifest_gets_the_documented_defaults(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "x", MINIMAL.format(id="remote", kind="thing"))

    manifest = load_manifest(path)

    assert manifest.subject_prefix == "pollerd.plugins.remote"
    assert (manifest.max_concurrent_ticks, manifest.tick_timeout_s) == (8, 30.0)
    assert (manifest.entrypoint, manifest.description) == (None, "")
    assert manifest.external


def test_an_ephemeral_plugin_needs_an_entrypoint(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path, "x", MINIMAL.format(id="once", kind="k").replace("long_lived", "ephemeral")
    )

    assert problems_of(path) == [
        f"{path}:7: plugin.entrypoint: required for an ephemeral plugin; "
        "add [plugin.entrypoint] with the command that runs one tick"
    ]


def test_an_ephemeral_plugin_can_be_pre_forked(tmp_path: Path) -> None:
    text = MINIMAL.format(id="fast", kind="k").replace("long_lived", "ephemeral")
    text += 'prefork = true\n[plugin.entrypoint]\ncommand = "python"\nargs = ["fast.py"]\n'
    path = write_plugin(tmp_path, "x", text)

    manifest = load_manifest(path)

    assert (manifest.lifecycle, manifest.prefork) == ("ephemeral", True)
    assert not load_manifest(write_plugin(tmp_path, "y", FEEDS)).prefork


def test_only_an_ephemeral_plugin_can_be_pre_forked(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "x", MINIMAL.format(id="slow", kind="k") + "prefork = true\n")

    assert problems_of(path) == [
        f"{path}:8: plugin.poller.prefork: only an ephemeral plugin can be pre-forked; "
        'remove prefork or set lifecycle = "ephemeral"'
    ]


def test_bad_kind_names_are_reported_on_their_lines(tmp_path: Path) -> None:
    path = write_plugin(
        tmp_path,
        "x",
        """
        [plugin]
        id = "p"
        version = "1"
        [plugin.poller]
        lifecycle = "long_lived"
        kinds = [
          "good",
          "Bad-Kind",
        ]
        """,
    )

    assert problems_of(path) == [
        f"{path}:8: plugin.poller.kinds[1]: invalid kind 'Bad-Kind': must match ^[a-z][a-z0-9_]*$"
    ]


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        (
            'id = "feeds"',
            'id = "Feeds!"',
            "2: plugin.id: invalid plugin id 'Feeds!': must match ^[a-z][a-z0-9_-]{0,63}$",
        ),
        (
            'kinds = ["rss", "atom"]',
            'kinds = ["rss", "rss"]',
            "12: plugin.poller.kinds: kinds declared twice: rss",
        ),
        (
            'kinds = ["rss", "atom"]',
            "kinds = []",
            "12: plugin.poller.kinds: "
            "List should have at least 1 item after validation, not 0, got []",
        ),
        (
            'lifecycle = "long_lived"',
            'lifecycle = "forever"',
            "13: plugin.poller.lifecycle: must be 'long_lived' or 'ephemeral', got 'forever'",
        ),
        (
            "max_concurrent_ticks = 4",
            "max_concurrent_ticks = 257",
            "15: plugin.poller.max_concurrent_ticks: must be less than or equal to 256, got 257",
        ),
        (
            'tick_timeout = "1m"',
            'tick_timeout = "soon"',
            "16: plugin.poller.tick_timeout: invalid duration 'soon': expected a number with a "
            "unit, e.g. '500ms', '10s', '5m', '2h', '1d' or '1h30m'",
        ),
        (
            'subject_prefix = "acme.feeds"',
            'subject_prefix = "acme.*"',
            "14: plugin.poller.subject_prefix: invalid subject prefix 'acme.*': "
            r"must match ^[^\s.*>]+(\.[^\s.*>]+)*$",
        ),
        (
            'env = ["HTTPS_PROXY"]',
            'env = ["HTTPS PROXY"]',
            "9: plugin.entrypoint.env[0]: invalid variable name 'HTTPS PROXY': "
            "must match ^[A-Za-z_][A-Za-z0-9_]*$",
        ),
        (
            'args = ["-m", "feeds"]',
            'argz = ["-m", "feeds"]',
            "8: plugin.entrypoint.argz: unknown key; did you mean 'args'?",
        ),
        ('version = "0.1.0"', "version = 1", "3: plugin.version: must be a valid string, got 1"),
    ],
)
def test_an_invalid_field_names_the_file_line_and_field(
    tmp_path: Path, replace: str, by: str, message: str
) -> None:
    assert replace in FEEDS
    path = write_plugin(tmp_path, "feeds", FEEDS.replace(replace, by))

    assert problems_of(path) == [f"{path}:{message}"]


def test_every_problem_of_a_manifest_is_listed(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "x", '[plugin]\nid = "x"\nversoin = "1"\n[extra]\n')

    assert problems_of(path) == [
        f"{path}:1: plugin.version: required",
        f"{path}:1: plugin.poller: required",
        f"{path}:3: plugin.versoin: unknown key; did you mean 'version'?",
        f"{path}:4: extra: unknown key; known keys: plugin",
    ]


def test_malformed_toml_names_its_line(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, "x", '[plugin]\nid = "x"\nversion = \n')

    assert problems_of(path) == [f"{path}:3: malformed TOML: Invalid value"]


def test_discovery_loads_one_level_down_in_sorted_order(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write_plugin(second, "zeta", MINIMAL.format(id="zeta", kind="z"))
    write_plugin(second, "alpha", MINIMAL.format(id="alpha", kind="a"))
    write_plugin(first, "middle", MINIMAL.format(id="middle", kind="m"))
    write_plugin(first, ".hidden", MINIMAL.format(id="hidden", kind="h"))
    write_plugin(first / "deep", "nested", MINIMAL.format(id="nested", kind="n"))
    (first / "no-manifest").mkdir()

    manifests = discover_manifests([second, first, second])

    assert [manifest.id for manifest in manifests] == ["alpha", "zeta", "middle"]


def test_discovery_reports_a_missing_folder_and_every_bad_manifest(tmp_path: Path) -> None:
    good = write_plugin(tmp_path, "one", MINIMAL.format(id="same", kind="a"))
    twin = write_plugin(tmp_path, "two", MINIMAL.format(id="same", kind="b"))
    bad = write_plugin(tmp_path, "three", MINIMAL.format(id="Bad", kind="c"))

    with pytest.raises(ManifestError) as caught:
        discover_manifests([tmp_path / "missing", tmp_path])

    assert caught.value.problems == [
        f"{tmp_path / 'missing'}: plugin folder does not exist; "
        "create it or fix 'plugins' in pollers.yaml",
        f"{bad}:2: plugin.id: invalid plugin id 'Bad': must match ^[a-z][a-z0-9_-]{{0,63}}$",
        f"{twin}:2: plugin.id: plugin id 'same' is already used by {good}; "
        "plugin ids must be unique",
    ]


# --- security checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    ["pollerd.events", "pollerd.events.feeds", "$JS.API", "$SRV", "_INBOX.x", "$KV.POLLERD_STATE"],
)
def test_a_subject_prefix_under_a_reserved_root_is_refused_with_its_line(
    tmp_path: Path, prefix: str
) -> None:
    path = tmp_path / "plugin.toml"
    path.write_text(
        '[plugin]\nid = "evil"\nversion = "1.0.0"\n\n'
        '[plugin.poller]\nkinds = ["evil"]\nlifecycle = "long_lived"\n'
        f'subject_prefix = "{prefix}"\n'
    )
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    assert f"{path}:8: plugin.poller.subject_prefix:" in str(refused.value)
    assert "reserve" in str(refused.value)


def test_a_subject_prefix_that_only_starts_like_a_reserved_one_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "plugin.toml"
    path.write_text(
        '[plugin]\nid = "ok"\nversion = "1.0.0"\n\n'
        '[plugin.poller]\nkinds = ["ok"]\nlifecycle = "long_lived"\n'
        'subject_prefix = "pollerd.eventsource"\n'
    )
    assert load_manifest(path).subject_prefix == "pollerd.eventsource"


@pytest.mark.parametrize(
    ("entrypoint", "flagged"),
    [
        ('command = "../../x.sh"', "6: plugin.entrypoint.command"),
        ('command = "python"\nargs = ["../other/main.py"]', "7: plugin.entrypoint.args"),
        ('command = "./run.sh"', None),
        ('command = "python"\nargs = ["-m", "feeds"]', None),
        ('command = "/usr/bin/node"\nargs = ["../x.js"]', None),
    ],
)
def test_an_entrypoint_outside_the_plugin_folder_is_flagged(
    tmp_path: Path, entrypoint: str, flagged: str | None
) -> None:
    folder = tmp_path / "plugins" / "p"
    folder.mkdir(parents=True)
    path = folder / "plugin.toml"
    path.write_text(
        '[plugin]\nid = "p"\nversion = "1.0.0"\n\n'
        f"[plugin.entrypoint]\n{entrypoint}\n\n"
        '[plugin.poller]\nkinds = ["p"]\nlifecycle = "ephemeral"\n'
    )
    warnings = load_manifest(path).warnings
    assert len(warnings) == (0 if flagged is None else 1)
    if flagged is not None:
        assert warnings[0].startswith(f"{path}:{flagged}: ")
        assert "outside the plugin folder" in warnings[0]
