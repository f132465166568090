"""The README documents every setting, the way a user spells it."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.settings import Settings, spelling

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(name: str) -> None:
    spelled = spelling(name)
    if spelled.flag:
        row = next(
            (line for line in README.splitlines() if line.startswith(f"| `{spelled.flag}` ")),
            None,
        )
        assert row is not None, f"README lacks a row for {spelled.flag}"
        for env in spelled.env:
            assert f"`{env}`" in row, (spelled.flag, env)
    else:
        for env in spelled.env:
            assert f"`{env}`" in README, env
