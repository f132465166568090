"""The README documents every setting, the way a user spells it."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ENV_PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(name: str) -> None:
    field = Settings.model_fields[name]
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = extra.get("flag")
    if flag:
        row = next((line for line in README.splitlines() if line.startswith(f"| `{flag}` ")), None)
        assert row is not None, f"README lacks a row for {flag}"
        assert f"{ENV_PREFIX}{name.upper()}" in row
    env_names = extra.get("env")
    for env in env_names if isinstance(env_names, list) else []:
        assert f"`{env}`" in README
