"""Programs from the system's packages that some tests drive (promtool, chromium, systemd).

`.ci/run` installs them; on a developer machine without them those tests are skipped with the
install command. Under CI (``CI`` set) a missing program fails the test instead: a green CI run
must have run them.
"""

from __future__ import annotations

import os
import shutil

import pytest

APT_PACKAGES = {
    "promtool": "prometheus",
    "chromium": "chromium",
    "systemd-analyze": "systemd",
    "zsh": "zsh",
    "unshare": "util-linux",
}


def require_tool(name: str) -> str:
    """The path of program ``name``; skips the test (fails it under CI) when it is missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (apt-get install {APT_PACKAGES.get(name, name)})"
    if os.environ.get("CI"):
        pytest.fail(message + "; .ci/run should have installed it")
    pytest.skip(message)
