"""What an exporter without a web config file imports: nothing it does not need.

PyYAML and bcrypt cost about 1.8 MB of RSS together, a fair share of the 60 MB that 100 runs
may take (bench/README.md), and only a web config file needs them.
"""

from __future__ import annotations

import subprocess
import sys


def test_yaml_and_bcrypt_wait_for_a_web_config_file() -> None:
    probe = (
        "import sys, exporter.cli, exporter.service; "
        "print(sorted(m for m in ('yaml', 'bcrypt') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"
