"""A clean first contact: installing amem prints no warning of our own packaging."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# what setuptools prints about a project's own configuration (e.g. `project.license` as a TOML table)
OURS = re.compile(r"BuildBackendWarning|SetuptoolsWarning|SetuptoolsDeprecationWarning|deprecated", re.I)


def test_pip_install_editable_prints_no_warning_of_ours() -> None:
    # --no-build-isolation: the venv's own setuptools (>= 77, the dev extra) instead of a download
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    command += ["--disable-pip-version-check", "--dry-run", "-e", str(REPO)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Would install amem" in output
    assert [line for line in output.splitlines() if OURS.search(line)] == []
