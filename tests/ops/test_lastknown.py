from __future__ import annotations

from pathlib import Path

import pytest

from pollerd.ops.lastknown import admin_address

DEFAULT = ("127.0.0.1", 9180)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nhttp: 127.0.0.1:9999\nbogus_key: 1\n", ("127.0.0.1", 9999)),
        ("version: 1\nhttp: {listen: '[::1]:9998', token: t}\n", ("::1", 9998)),
        ("version: 1\nhttp: off\n", None),
        ("version: 1\njobs: []\n", DEFAULT),
        ("version: 1\nhttp: not-an-address\n", DEFAULT),
        ("version: 1\nhttp: 127.0.0.1:9997\njobs: [unclosed\n", ("127.0.0.1", 9997)),
        ("version: 1\nhttp: ${UNSET_ADMIN}\njobs: [unclosed\n", DEFAULT),
        ("jobs: [unclosed\n", DEFAULT),
    ],
    ids=[
        "invalid config, valid yaml",
        "mapping form",
        "off",
        "absent",
        "bad value",
        "malformed yaml",
        "unset variable",
        "malformed without http",
    ],
)
def test_the_admin_address_is_read_from_an_invalid_config_best_effort(
    tmp_path: Path, text: str, expected: tuple[str, int] | None
) -> None:
    path = tmp_path / "pollers.yaml"
    path.write_text(text)

    assert admin_address(path, {}) == expected


def test_a_missing_config_names_no_service_to_ask(tmp_path: Path) -> None:
    assert admin_address(tmp_path / "missing.yaml", {}) is None
