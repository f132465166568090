"""``promtool check metrics`` for tests: skipped only where promtool is absent and CI is unset."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def promtool_path() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (Debian package 'prometheus')")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def promtool_check_metrics(exposition: bytes) -> str:
    """promtool's complaints about an exposition; an empty string means it found nothing."""
    done = subprocess.run(
        [promtool_path(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    complaints = (done.stdout + done.stderr).decode().strip()
    if done.returncode != 0 and not complaints:
        complaints = f"promtool exited {done.returncode}"
    return complaints
