"""YAML text to plain data, strictly: duplicate keys refused, errors that never quote the text.

Its own module so that PyYAML is imported only by an exporter that has a web config file.
"""

from __future__ import annotations

from typing import Any

import yaml


class YamlProblem(ValueError):
    """The text is not the YAML it should be; the message is safe to print."""


def load_yaml(text: bytes) -> Any:
    """The document's data (None for an empty one); YamlProblem if it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YamlProblem(_yaml_problem(exc)) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a second ``alice:`` must not silently win."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable keys are reported by construct_mapping below
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error without PyYAML's source snippet, which could quote a password hash."""
    if isinstance(exc, yaml.reader.ReaderError):
        return "not valid UTF-8 or UTF-16 text"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is not None:
            return f"invalid YAML: {problem} at line {mark.line + 1}, column {mark.column + 1}"
        return f"invalid YAML: {problem}"
    return f"invalid YAML ({type(exc).__name__})"
