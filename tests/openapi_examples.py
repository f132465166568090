"""The response examples of the official OpenAPI fragment, as the JSON bodies the API sends."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SPEC = Path(__file__).parent / "fixtures" / "finetuning-openapi.yaml"


class _NoTimestampLoader(yaml.SafeLoader):
    """YAML turns unquoted RFC 3339 text into datetimes; the API sends strings."""


_NoTimestampLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


@cache
def _spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=_NoTimestampLoader)
    return loaded


def example(path: str) -> dict[str, Any]:
    """The 200 example of GET ``path`` exactly as written in the spec."""
    operation = _spec()["paths"][path]["get"]
    body: dict[str, Any] = operation["responses"]["200"]["content"]["application/json"]["example"]
    return body


def example_bytes(path: str) -> bytes:
    return json.dumps(example(path)).encode()
