"""Scripted accounts: named models with exact timings, scripted loss spikes and non-finite values.

A random ``SimWorld`` shows what the exporter meets in the wild; a ``Scenario`` is for tests that
must know in advance what happens and when ("a loss spike on one model and a healthy run on
another"). Scripted models follow the same curve shapes as random ones but with mild noise only
(at most 3% either way) and no random spikes or NaNs: whatever stands out was scripted.

A scenario file is YAML or JSON::

    models:
      - name: spiky-run
        eval_every: 8
        step_seconds: 1
        spikes: [{step: 96, factor: 5, evaluations: 4}]
        extra_metrics: [loss]
      - name: nan-run
        non_finite: [[64, NaN]]      # or [{step: 64, value: NaN}]

Every mistake is a ``ValueError`` (a ``ScenarioError``) whose message starts with the path of the
offending field, such as ``models[0].spikes[0].step: 90 is not a multiple of eval_every (8)``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import math
import pathlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

import yaml

#: The spellings Cohere (protojson) uses for non-finite doubles.
NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

#: Metrics every evaluation carries; an extra metric may not reuse one of these names.
STANDARD_METRICS: Final = frozenset(
    {"accuracy", "cross_entropy", "generation_accuracy", "generation_cross_entropy", "step"}
)

#: Scenario files shipped with the package, loadable by name through ``load_scenario``.
BUNDLED_DIR: Final = "scenarios"


class ScenarioError(ValueError):
    """A bad scenario: ``field`` is the path of the offending value (``models[1].eval_every``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def under(self, prefix: str) -> ScenarioError:
        """The same error with ``prefix`` put in front of the field path."""
        if not self.field:
            return ScenarioError(prefix, self.reason)
        joiner = "" if self.field.startswith("[") else "."
        return ScenarioError(f"{prefix}{joiner}{self.field}", self.reason)


@contextlib.contextmanager
def _within(prefix: str) -> Iterator[None]:
    try:
        yield
    except ScenarioError as exc:
        raise exc.under(prefix) from None


# --------------------------------------------------------------------------- field checks


def _int(field: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(field, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ScenarioError(field, f"must be at least {minimum}, got {value}")
    return value


def _float(
    field: str, value: object, *, minimum: float | None = None, above: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ScenarioError(field, f"must be finite, got {value!r}")
    if minimum is not None and (number <= minimum if above else number < minimum):
        relation = "above" if above else "at least"
        raise ScenarioError(field, f"must be {relation} {minimum:g}, got {value!r}")
    return number


def _str(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(field, f"must be a non-empty string, got {value!r}")
    return value


def _tuple(field: str, value: object) -> tuple[Any, ...]:
    if isinstance(value, list | tuple):
        return tuple(value)
    raise ScenarioError(field, f"must be a list, got {value!r}")


def _mapping(field: str, value: object, known: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(field, f"must be a mapping, got {value!r}")
    for key in value:
        if key not in known:
            where = f"{field}.{key}" if field else str(key)
            raise ScenarioError(where, f"unknown field (known: {', '.join(sorted(known))})")
    return value


def _set(instance: object, name: str, value: object) -> None:
    """Normalise a field of a frozen dataclass (an int given for a float field becomes a float)."""
    object.__setattr__(instance, name, value)


def _names(cls: type[Any]) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class ScriptedSpike:
    """A loss spike: from evaluated ``step`` on, ``evaluations`` evaluations in a row are spiked.

    ``cross_entropy``, ``generation_cross_entropy`` and every extra metric are multiplied by
    ``factor``; accuracies are left alone.
    """

    step: int
    factor: float = 5.0
    evaluations: int = 1

    def __post_init__(self) -> None:
        _int("step", self.step, minimum=0)
        _set(self, "factor", _float("factor", self.factor, minimum=0.0, above=True))
        _int("evaluations", self.evaluations, minimum=1)

    @classmethod
    def from_dict(cls, data: object) -> ScriptedSpike:
        """Build from a mapping with ``step`` and optionally ``factor`` and ``evaluations``."""
        raw = _mapping("", data, _names(cls))
        if "step" not in raw:
            raise ScenarioError("step", "missing")
        return cls(**raw)


@dataclass(frozen=True)
class ScriptedModel:
    """One scripted fine-tuned model; times are simulated seconds.

    Created ``starts_at`` seconds after the clock's start (negative: before it; positive: the model
    is absent from the account until then), QUEUED for ``queue_seconds``, then FINETUNING:
    step 0 is evaluated when training starts and every ``eval_every`` steps after that, at
    ``step_seconds`` per step, until ``total_steps``; then DEPLOYING_API for ``deploy_seconds``
    and READY. With ``fail_at_step`` the model turns FAILED when training reaches that step.
    """

    name: str
    eval_every: int = 8
    step_seconds: float = 2.0
    total_steps: int = 400
    queue_seconds: float = 5.0
    deploy_seconds: float = 30.0
    starts_at: float = 0.0
    fail_at_step: int | None = None
    spikes: tuple[ScriptedSpike, ...] = ()
    non_finite: tuple[tuple[int, str], ...] = ()
    extra_metrics: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        _str("name", self.name)
        eval_every = _int("eval_every", self.eval_every, minimum=1)
        _set(self, "step_seconds", _float("step_seconds", self.step_seconds, minimum=0, above=True))
        total = _int("total_steps", self.total_steps, minimum=1)
        _set(self, "queue_seconds", _float("queue_seconds", self.queue_seconds, minimum=0.0))
        _set(self, "deploy_seconds", _float("deploy_seconds", self.deploy_seconds, minimum=0.0))
        _set(self, "starts_at", _float("starts_at", self.starts_at))
        _int("seed", self.seed)
        last = total
        if self.fail_at_step is not None:
            fail = _int("fail_at_step", self.fail_at_step, minimum=1)
            if fail > total:
                raise ScenarioError("fail_at_step", f"{fail} is beyond total_steps ({total})")
            last = fail - 1
        last -= last % eval_every  # the last step that is evaluated

        def evaluated(field: str, step: int) -> None:
            if step % eval_every:
                raise ScenarioError(field, f"{step} is not a multiple of eval_every ({eval_every})")
            if step > last:
                raise ScenarioError(field, f"{step} is after the last evaluated step ({last})")

        spiked: dict[int, int] = {}
        for i, spike in enumerate(_tuple("spikes", self.spikes)):
            if not isinstance(spike, ScriptedSpike):
                raise ScenarioError(f"spikes[{i}]", f"must be a ScriptedSpike, got {spike!r}")
            evaluated(f"spikes[{i}].step", spike.step)
            end = spike.step + (spike.evaluations - 1) * eval_every
            if end > last:
                raise ScenarioError(
                    f"spikes[{i}].evaluations",
                    f"{spike.evaluations} evaluations from step {spike.step} run past the last "
                    f"evaluated step ({last})",
                )
            for step in range(spike.step, end + 1, eval_every):
                if step in spiked:
                    raise ScenarioError(
                        f"spikes[{i}].step", f"overlaps spikes[{spiked[step]}] at step {step}"
                    )
                spiked[step] = i

        seen: set[int] = set()
        for i, entry in enumerate(_tuple("non_finite", self.non_finite)):
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise ScenarioError(f"non_finite[{i}]", f"must be a (step, value) pair: {entry!r}")
            step = _int(f"non_finite[{i}].step", entry[0], minimum=0)
            evaluated(f"non_finite[{i}].step", step)
            if entry[1] not in NON_FINITE:
                raise ScenarioError(
                    f"non_finite[{i}].value",
                    f"{entry[1]!r} is not one of {', '.join(map(repr, NON_FINITE))}",
                )
            if step in seen:
                raise ScenarioError(f"non_finite[{i}].step", f"step {step} is listed twice")
            seen.add(step)

        extras: set[str] = set()
        for i, metric in enumerate(_tuple("extra_metrics", self.extra_metrics)):
            _str(f"extra_metrics[{i}]", metric)
            if metric in STANDARD_METRICS:
                raise ScenarioError(f"extra_metrics[{i}]", f"{metric!r} is reported anyway")
            if metric in extras:
                raise ScenarioError(f"extra_metrics[{i}]", f"{metric!r} is listed twice")
            extras.add(metric)

    # ----------------------------------------------------------------- derived

    @property
    def evaluated_steps(self) -> range:
        """The step numbers this model ever reports, ascending."""
        last = self.total_steps if self.fail_at_step is None else self.fail_at_step - 1
        return range(0, last + 1, self.eval_every)

    def spike_factor(self, step: int) -> float:
        """The factor applied to the loss-like metrics at ``step`` (1.0 when not spiked)."""
        for spike in self.spikes:
            end = spike.step + (spike.evaluations - 1) * self.eval_every
            if spike.step <= step <= end:
                return spike.factor
        return 1.0

    def non_finite_value(self, step: int) -> float | None:
        """The scripted non-finite ``cross_entropy`` at ``step``, if any."""
        for number, value in self.non_finite:
            if number == step:
                return NON_FINITE[value]
        return None

    @classmethod
    def from_dict(cls, data: object) -> ScriptedModel:
        """Build from a mapping as found in a scenario file (lists for the tuple fields)."""
        raw = dict(_mapping("", data, _names(cls)))
        if "name" not in raw:
            raise ScenarioError("name", "missing")
        if "spikes" in raw:
            spikes = []
            for i, item in enumerate(_tuple("spikes", raw["spikes"])):
                with _within(f"spikes[{i}]"):
                    spikes.append(ScriptedSpike.from_dict(item))
            raw["spikes"] = tuple(spikes)
        if "non_finite" in raw:
            raw["non_finite"] = tuple(
                _non_finite_entry(f"non_finite[{i}]", item)
                for i, item in enumerate(_tuple("non_finite", raw["non_finite"]))
            )
        if "extra_metrics" in raw:
            raw["extra_metrics"] = _tuple("extra_metrics", raw["extra_metrics"])
        return cls(**raw)


def _non_finite_value(field: str, value: object) -> object:
    """JSON readers turn a bare ``NaN`` into a float: map it back to Cohere's spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    if not isinstance(value, str):
        raise ScenarioError(field, f"must be one of {', '.join(map(repr, NON_FINITE))}")
    return value


def _non_finite_entry(field: str, item: object) -> tuple[Any, Any]:
    """``[step, value]`` or ``{step: ..., value: ...}``."""
    if isinstance(item, Mapping):
        raw = _mapping(field, item, frozenset({"step", "value"}))
        for key in ("step", "value"):
            if key not in raw:
                raise ScenarioError(f"{field}.{key}", "missing")
        step, value = raw["step"], raw["value"]
    elif isinstance(item, list | tuple) and len(item) == 2:
        step, value = item
    else:
        raise ScenarioError(field, f"must be [step, value] or {{step, value}}, got {item!r}")
    return step, _non_finite_value(f"{field}.value", value)


@dataclass(frozen=True)
class Scenario:
    """A scripted account: exactly these models, in this order."""

    models: tuple[ScriptedModel, ...]

    def __post_init__(self) -> None:
        names: dict[str, int] = {}
        for i, model in enumerate(_tuple("models", self.models)):
            if not isinstance(model, ScriptedModel):
                raise ScenarioError(f"models[{i}]", f"must be a ScriptedModel, got {model!r}")
            if model.name in names:
                raise ScenarioError(
                    f"models[{i}].name", f"{model.name!r} is also models[{names[model.name]}]"
                )
            names[model.name] = i

    @classmethod
    def from_dict(cls, data: object) -> Scenario:
        """Build from the parsed contents of a scenario file: ``{"models": [...]}``."""
        raw = _mapping("", data, _names(cls))
        if "models" not in raw:
            raise ScenarioError("models", "missing")
        models = []
        for i, item in enumerate(_tuple("models", raw["models"])):
            with _within(f"models[{i}]"):
                models.append(ScriptedModel.from_dict(item))
        return cls(models=tuple(models))

    @staticmethod
    def load(path: pathlib.Path) -> Scenario:
        """Read a YAML or JSON scenario file (JSON when the name ends in ``.json``)."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError("", f"cannot read scenario file {path}: {exc.strerror}") from None
        return Scenario.parse(text, json_format=path.suffix.lower() == ".json", source=str(path))

    @staticmethod
    def parse(text: str, *, json_format: bool = False, source: str = "scenario") -> Scenario:
        """Parse scenario text; errors name ``source`` and the offending field."""
        try:
            data = json.loads(text) if json_format else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            kind = "JSON" if json_format else "YAML"
            raise ScenarioError("", f"{source}: not valid {kind}: {exc}") from None
        try:
            return Scenario.from_dict(data)
        except ScenarioError as exc:
            raise ScenarioError(exc.field, f"{exc.reason} (in {source})") from None


def bundled_scenarios() -> list[str]:
    """Names of the scenario files shipped with the package (without ``.yaml``)."""
    folder = importlib.resources.files("exporter.simulator").joinpath(BUNDLED_DIR)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def load_scenario(path: str) -> Scenario:
    """Load the scenario file at ``path``, or a bundled one by name (``spike-and-healthy``).

    Any problem, a missing file included, is a ``ValueError`` whose message says what to fix.
    """
    file = pathlib.Path(path)
    if file.is_file():
        return Scenario.load(file)
    if path in bundled_scenarios():
        folder = importlib.resources.files("exporter.simulator").joinpath(BUNDLED_DIR)
        text = folder.joinpath(f"{path}.yaml").read_text(encoding="utf-8")
        return Scenario.parse(text, source=f"bundled scenario {path}")
    known = ", ".join(bundled_scenarios()) or "none"
    raise ScenarioError("", f"no scenario file {path!r} (bundled scenarios: {known})")
