from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pollerd.config.manifest import Manifest
from pollerd.config.pollers import load_config
from pollerd.config.router import PluginPollerRouter, resolve_jobs
from pollerd.config.setup import load_setup
from pollerd.errors import ConfigError, DuplicateKindError, ManifestError


def manifest(plugin_id: str, *kinds: str, folder: str | None = None) -> Manifest:
    path = Path("/plugins") / (folder or plugin_id) / "plugin.toml"
    return Manifest(
        id=plugin_id,
        version="1",
        path=path,
        kinds=kinds,
        lifecycle="long_lived",
        kind_lines={kind: 7 for kind in kinds},
    )


def test_the_router_maps_each_kind_to_its_plugin() -> None:
    feeds, files = manifest("feeds", "rss", "atom"), manifest("files", "dir_watch")

    router = PluginPollerRouter([files, feeds])

    assert router.plugin_for("rss") is feeds
    assert router.plugin_for("dir_watch") is files
    assert router.plugin_for("nope") is None
    assert router.plugin("feeds") is feeds and router.plugin("nope") is None
    assert router.plugins() == [feeds, files]
    assert router.kinds() == {"atom": "feeds", "dir_watch": "files", "rss": "feeds"}


def test_a_kind_claimed_by_another_plugin_names_the_kind_both_ids_and_both_paths() -> None:
    router = PluginPollerRouter([manifest("feeds", "rss", "atom")])

    with pytest.raises(DuplicateKindError) as caught:
        router.register(manifest("news", "json", "rss"))

    error = caught.value
    assert (error.kind, error.first, error.second) == (
        "rss",
        ("feeds", "/plugins/feeds/plugin.toml:7"),
        ("news", "/plugins/news/plugin.toml:7"),
    )
    assert str(error) == (
        "poller kind 'rss' is declared by two plugins: 'feeds' (/plugins/feeds/plugin.toml:7) "
        "and 'news' (/plugins/news/plugin.toml:7); remove the kind from one of the manifests"
    )
    assert router.kinds() == {"atom": "feeds", "rss": "feeds"}  # nothing of 'news' registered


def test_registering_the_same_plugin_id_replaces_it_and_releases_its_old_kinds() -> None:
    router = PluginPollerRouter([manifest("feeds", "rss", "atom"), manifest("files", "dir")])
    reloaded = manifest("feeds", "rss", "json", folder="feeds-v2")

    router.register(reloaded)

    assert router.plugin("feeds") is reloaded
    assert router.kinds() == {"dir": "files", "json": "feeds", "rss": "feeds"}
    assert router.plugin_for("atom") is None


def test_unregister_releases_the_kinds_and_ignores_unknown_ids() -> None:
    router = PluginPollerRouter([manifest("feeds", "rss")])

    router.unregister("feeds")
    router.unregister("never-registered")

    assert (router.plugins(), router.kinds()) == ([], {})
    router.register(manifest("other", "rss"))
    assert router.kinds() == {"rss": "other"}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


JOBS = """
version: 1
jobs:
  - {id: news, kind: rss, schedule: {every: 1m}}
  - id: mystery
    schedule: {every: 1m}
    kind: ftp
  - {id: broken, kind: rss, schedule: {every: never}}
  - {id: quiet, kind: atom, schedule: {every: 1m}, enabled: false}
"""


def test_resolve_jobs_marks_jobs_of_unknown_kinds_broken_with_file_line_and_field(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path / "pollers.yaml", JOBS), {})
    router = PluginPollerRouter([manifest("feeds", "rss", "atom"), manifest("files", "dir")])

    jobs, broken = resolve_jobs(config, router)

    assert [job.id for job in jobs] == ["news", "quiet"]
    assert [(job.id, job.line) for job in broken] == [("mystery", 4), ("broken", 7)]
    assert broken[0].reason == (
        f"{config.path}:6: jobs[1].kind: unknown kind 'ftp'; known kinds: atom, dir, rss"
    )
    assert broken[1].reason.startswith(f"{config.path}:7: jobs[2].schedule.every: ")


def test_load_setup_loads_config_manifests_and_routes(tmp_path: Path) -> None:
    write(
        tmp_path / "plugins" / "feeds" / "plugin.toml",
        """
        [plugin]
        id = "feeds"
        version = "1"
        [plugin.poller]
        kinds = ["rss", "atom"]
        lifecycle = "long_lived"
        """,
    )
    path = write(tmp_path / "pollers.yaml", JOBS)

    setup = load_setup(path, {})

    assert setup.config.path == path
    assert [plugin.id for plugin in setup.router.plugins()] == ["feeds"]
    assert [job.id for job in setup.jobs] == ["news", "quiet"]
    assert [job.id for job in setup.broken] == ["mystery", "broken"]
    assert setup.job("quiet") is setup.jobs[1]
    assert setup.job("broken") is None and setup.job("nobody") is None


def test_load_setup_fails_on_a_kind_declared_by_two_plugins(tmp_path: Path) -> None:
    for plugin_id in ("one", "two"):
        write(
            tmp_path / "plugins" / plugin_id / "plugin.toml",
            f'[plugin]\nid = "{plugin_id}"\nversion = "1"\n'
            '[plugin.poller]\nkinds = ["rss"]\nlifecycle = "long_lived"\n',
        )
    path = write(tmp_path / "pollers.yaml", "version: 1\n")

    with pytest.raises(DuplicateKindError) as caught:
        load_setup(path, {})

    assert caught.value.first == ("one", f"{tmp_path}/plugins/one/plugin.toml:5")
    assert caught.value.second == ("two", f"{tmp_path}/plugins/two/plugin.toml:5")


def test_load_setup_fails_on_a_missing_plugin_folder_or_a_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path / "pollers.yaml", "version: 1\nplugins: [nowhere]\n")

    with pytest.raises(ManifestError) as missing:
        load_setup(path, {})
    write(path, "version: 1\nplugins: [nowhere]\nhttp: ${PORT}\n")
    with pytest.raises(ConfigError) as unset:
        load_setup(path, {})

    assert missing.value.problems == [
        f"{tmp_path}/nowhere: plugin folder does not exist; create it or fix 'plugins' in "
        "pollers.yaml"
    ]
    assert unset.value.problems == [
        f"{path}:3: environment variable 'PORT' is not set; set it or write ${{PORT:-default}}"
    ]
