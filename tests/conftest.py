"""Options shared by every test tier."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=75.0,
        help="how long the soak test loads the exporter (CI keeps the default 75 s)",
    )
