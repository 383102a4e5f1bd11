"""The YAML reader's limits: alias bombs, deep nesting and file size end as file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pollerd.config import yamlfile
from pollerd.config.yamlfile import MAX_DEPTH, parse_yaml, read_yaml
from pollerd.errors import ConfigError


def alias_bomb(levels: int, width: int = 9) -> str:
    """The classic "billion laughs": each level is a list of ``width`` aliases of the one above."""
    names = [f"l{level}" for level in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * width) + "]"]
    for previous, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]")
    return "\n".join(lines) + "\n"


def nested_mappings(depth: int) -> str:
    return (
        "".join("  " * level + f"k{level}:\n" for level in range(depth)) + "  " * depth + "v: 1\n"
    )


def test_an_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() -> None:
    text = alias_bomb(levels=9)  # 9**10 values once expanded, from about 600 bytes

    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "pollers.yaml")

    (problem,) = caught.value.problems
    assert problem.startswith("pollers.yaml:6: the alias *l4 makes the document expand")
    assert "alias bomb" in problem


def test_aliases_that_share_values_are_not_a_bomb() -> None:
    shared = "common: &common {retry: {attempts: 2}, tags: [a, b, c]}\n"
    jobs = "".join(f"j{index}: *common\n" for index in range(2000))

    document = parse_yaml(shared + jobs, "pollers.yaml")

    assert document.data["j1999"] == {"retry": {"attempts": 2}, "tags": ["a", "b", "c"]}
    assert document.line_of(("j1999",)) == 2001
    assert document.line_of(("j1999", "tags")) == 1  # where the shared value is written


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (nested_mappings(3000), MAX_DEPTH + 1),
        (
            "x:\n"
            + "".join("  " * level + "-\n" for level in range(1, 3000))
            + "  " * 3000
            + "1\n",
            MAX_DEPTH + 1,
        ),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", 1),
    ],
    ids=["mappings", "block sequences", "flow sequences"],
)
def test_nesting_deeper_than_the_limit_is_a_file_line_error(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "pollers.yaml")

    (problem,) = caught.value.problems
    assert problem.startswith(f"pollers.yaml:{line}: "), problem
    assert "nest" in problem


def test_nesting_up_to_the_limit_is_read() -> None:
    document = parse_yaml(nested_mappings(MAX_DEPTH - 1), "pollers.yaml")

    assert document.line_of(tuple(f"k{level}" for level in range(MAX_DEPTH - 1))) == MAX_DEPTH - 1


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yamlfile, "MAX_FILE_BYTES", 1024)
    path = tmp_path / "pollers.yaml"
    path.write_text("version: 1\n" + "# padding\n" * 200)

    with pytest.raises(ConfigError) as caught:
        read_yaml(path, {}, "pollers.yaml")

    assert caught.value.problems == [
        "pollers.yaml: the file is larger than 1 KiB; a pollers.yaml this large is not one an "
        "operator wrote: check that it is the right file"
    ]


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1, c: [1, 2.5, null, true]}\nd: *x\ne: {<<: *x, f: 2}\n",
        "a: !!set {x, y}\nb: !!omap [{a: 1}, {b: 2}]\nc: !!binary aGVsbG8=\n",
        "a: 1\na: 2\nb: {x: 1, x: 3}\n",
        "- 2025-01-01\n- 2025-01-01T10:00:00Z\n- ~\n- yes\n- 0x1f\n- 1.5e3\n- .inf\n- '7'\n",
        "1: a\n2.5: b\ntrue: c\nnull: d\n",
        "? !!str 12\n: v\nlist: [[1, [2, {a: b}]], []]\n",
        "jobs:\n  - &j {id: a, kind: k, schedule: {every: 1s}}\n  - <<: *j\n    id: b\n",
    ],
)
def test_the_data_is_what_pyyaml_constructs(text: str) -> None:
    assert parse_yaml(text, "f.yaml").data == yaml.safe_load(text)


def test_an_alias_gives_the_same_object_as_in_pyyaml() -> None:
    data = parse_yaml("x: &a [1, 2]\ny: [*a, *a]\n", "f.yaml").data

    assert data["y"][0] is data["x"]
    assert data["y"][1] is data["x"]
