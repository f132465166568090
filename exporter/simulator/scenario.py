"""Scripted accounts: named runs with exact timings, scripted loss spikes and non-finite values.

A random world shows what the exporter meets in the wild; a ``Scenario`` is for tests that must
know in advance what happens and when ("a loss spike on one model and a healthy run on
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

The models are pydantic models (frozen, unknown fields refused). Every mistake is a
``ValueError`` (a ``ScenarioError``) whose message starts with the path of the offending field,
such as ``models[0].spikes[0].step: 90 is not a multiple of eval_every (8)``.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import pathlib
import random
from collections.abc import Mapping
from typing import Annotated, Any, Final

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

#: The spellings Cohere (protojson) uses for non-finite doubles.
NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

#: Metrics the simulators report anyway (Cohere's evaluations, Together's metrics entries): an
#: extra metric may not reuse one of these names.
STANDARD_METRICS: Final = frozenset(
    {"accuracy", "cross_entropy", "generation_accuracy", "generation_cross_entropy", "step"}
    | {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "train/global_step"}
    | {"eval/loss", "eval/perplexity", "eval/global_step", "timestamp"}
)
#: Bound of the multiplicative noise on scripted models' metrics: a spike of 3x or more can never
#: be mistaken for noise (nor noise for a 2x spike).
SCRIPTED_NOISE: Final = 0.03

#: Scenario files shipped with the package, loadable by name through ``load_scenario``.
BUNDLED_DIR: Final = "scenarios"
_ECHO: Final = 60


class ScenarioError(ValueError):
    """A bad scenario: ``field`` is the path of the offending value (``models[1].eval_every``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


# --------------------------------------------------------------------------- errors


def _cut(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


def _fail(field: str, reason: str) -> PydanticCustomError:
    """A rule broken at ``field`` (relative to the model being checked; "" for the model)."""
    return PydanticCustomError("scenario", "{reason}", {"field": field, "reason": reason})


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _reason(error: Mapping[str, Any], known: str) -> str:
    """Say what is wrong in this module's words (pydantic's are about Python types)."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    reasons = {
        "missing": "missing",
        "extra_forbidden": f"unknown field (known: {known})",
        "int_type": f"must be an integer, got {_cut(value)}",
        "float_type": f"must be a number, got {_cut(value)}",
        "finite_number": f"must be finite, got {_cut(value)}",
        "string_type": f"must be a non-empty string, got {_cut(value)}",
        "string_too_short": f"must be a non-empty string, got {_cut(value)}",
        "tuple_type": f"must be a list, got {_cut(value)}",
        "model_type": f"must be a mapping ({ctx.get('class_name')} fields), got {_cut(value)}",
        "dict_type": f"must be a mapping, got {_cut(value)}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}, got {_cut(value)}",
        "greater_than": f"must be above {ctx.get('gt')}, got {_cut(value)}",
    }
    return reasons.get(kind, str(error["msg"]))


def scenario_error(exc: ValidationError) -> ScenarioError:
    """The first problem of ``exc`` as a ``ScenarioError`` naming the path of the field.

    A nested model built from a mapping goes through its own ``__init__``, so its problem
    arrives here already as a ``ScenarioError`` (wrapped in a pydantic "value_error") whose
    path is relative to it.
    """
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    nested = ctx.get("error")
    if error["type"] == "value_error" and isinstance(nested, ScenarioError):
        relative, reason = nested.field, nested.reason
    elif error["type"] == "scenario":
        relative, reason = str(ctx.get("field", "")), str(ctx["reason"])
    else:
        owner = _owner(exc.title, loc)
        known = ", ".join(sorted(owner.model_fields)) if owner is not None else ""
        relative, reason = "", _reason(error, known)
    path = _path(loc)
    if relative:
        path = f"{path}{'' if relative.startswith('[') or not path else '.'}{relative}"
    return ScenarioError(path, reason)


def _owner(title: str, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose field list an "unknown field" error should quote."""
    owner: type[BaseModel] | None = {c.__name__: c for c in _MODELS}.get(title)
    for part in loc[:-1]:
        if owner is Scenario and part == "models":
            owner = ScriptedModel
        elif owner is ScriptedModel and part == "spikes":
            owner = ScriptedSpike
        elif isinstance(part, str):
            return None
    return owner


class _Strict(BaseModel):
    """Frozen, no unknown fields, no silent conversions; errors are ``ScenarioError``s."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise scenario_error(exc) from None


# --------------------------------------------------------------------------- the model


class ScriptedSpike(_Strict):
    """A loss spike: from evaluated ``step`` on, ``evaluations`` evaluations in a row are spiked.

    ``cross_entropy``, ``generation_cross_entropy`` and every extra metric are multiplied by
    ``factor``; accuracies are left alone.
    """

    step: Annotated[int, Field(ge=0)]
    factor: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 5.0
    evaluations: Annotated[int, Field(ge=1)] = 1


def _non_finite_value(value: object) -> object:
    """JSON readers turn a bare ``NaN`` into a float: map it back to Cohere's spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _non_finite_entry(item: object) -> tuple[Any, Any]:
    """``[step, value]`` or ``{step: ..., value: ...}``, checked into a ``(step, value)`` pair."""
    if isinstance(item, Mapping):
        for key in item:
            if key not in ("step", "value"):
                raise _fail(str(key), "unknown field (known: step, value)")
        for key in ("step", "value"):
            if key not in item:
                raise _fail(key, "missing")
        step, value = item["step"], item["value"]
    elif isinstance(item, list | tuple) and len(item) == 2:
        step, value = item
    else:
        raise _fail("", f"must be [step, value] or {{step, value}}, got {_cut(item)}")
    if isinstance(step, bool) or not isinstance(step, int):
        raise _fail("step", f"must be an integer, got {_cut(step)}")
    if step < 0:
        raise _fail("step", f"must be at least 0, got {step}")
    value = _non_finite_value(value)
    if value not in NON_FINITE:
        raise _fail("value", f"{_cut(value)} is not one of {', '.join(map(repr, NON_FINITE))}")
    return step, value


NonFinite = Annotated[tuple[int, str], BeforeValidator(_non_finite_entry)]
Name = Annotated[str, Field(min_length=1)]


class ScriptedModel(_Strict):
    """One scripted fine-tuned model; times are simulated seconds.

    Created ``starts_at`` seconds after the clock's start (negative: before it; positive: the model
    is absent from the account until then), QUEUED for ``queue_seconds``, then FINETUNING:
    step 0 is evaluated when training starts and every ``eval_every`` steps after that, at
    ``step_seconds`` per step, until ``total_steps``; then DEPLOYING_API for ``deploy_seconds``
    and READY. With ``fail_at_step`` the model turns FAILED when training reaches that step.

    A Together AI world reads the same fields as a job that logs every training step:
    ``step_seconds`` per step from step 1, an eval entry every ``eval_every`` steps, queued for
    ``queue_seconds``, compressing and uploading for half of ``deploy_seconds`` each, ``error``
    at ``fail_at_step``. Spikes multiply ``train/loss`` (and ``eval/loss`` at eval steps) over
    the same step span; a non-finite value replaces ``train/loss`` at its step; an extra metric
    is a key of every training entry.
    """

    name: Name
    eval_every: Annotated[int, Field(ge=1)] = 8
    step_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0
    total_steps: Annotated[int, Field(ge=1)] = 400
    queue_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0
    deploy_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30.0
    starts_at: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    fail_at_step: Annotated[int, Field(ge=1)] | None = None
    spikes: tuple[ScriptedSpike, ...] = Field(default=(), strict=False)
    non_finite: tuple[NonFinite, ...] = Field(default=(), strict=False)
    extra_metrics: tuple[Name, ...] = Field(default=(), strict=False)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _not_blank(cls, name: str) -> str:
        if not name.strip():
            raise _fail("", f"must be a non-empty string, got {_cut(name)}")
        return name

    @model_validator(mode="after")
    def _scripted_steps_exist(self) -> ScriptedModel:
        total, eval_every = self.total_steps, self.eval_every
        if self.fail_at_step is not None and self.fail_at_step > total:
            raise _fail("fail_at_step", f"{self.fail_at_step} is beyond total_steps ({total})")
        last = self.evaluated_steps[-1]

        def evaluated(field: str, step: int) -> None:
            if step % eval_every:
                raise _fail(field, f"{step} is not a multiple of eval_every ({eval_every})")
            if step > last:
                raise _fail(field, f"{step} is after the last evaluated step ({last})")

        spiked: dict[int, int] = {}
        for i, spike in enumerate(self.spikes):
            evaluated(f"spikes[{i}].step", spike.step)
            end = spike.step + (spike.evaluations - 1) * eval_every
            if end > last:
                raise _fail(
                    f"spikes[{i}].evaluations",
                    f"{spike.evaluations} evaluations from step {spike.step} run past the last "
                    f"evaluated step ({last})",
                )
            for step in range(spike.step, end + 1, eval_every):
                if step in spiked:
                    raise _fail(
                        f"spikes[{i}].step", f"overlaps spikes[{spiked[step]}] at step {step}"
                    )
                spiked[step] = i
        seen: set[int] = set()
        for i, (step, _value) in enumerate(self.non_finite):
            evaluated(f"non_finite[{i}].step", step)
            if step in seen:
                raise _fail(f"non_finite[{i}].step", f"step {step} is listed twice")
            seen.add(step)
        extras: set[str] = set()
        for i, metric in enumerate(self.extra_metrics):
            if metric in STANDARD_METRICS:
                raise _fail(f"extra_metrics[{i}]", f"{metric!r} is reported anyway")
            if metric in extras:
                raise _fail(f"extra_metrics[{i}]", f"{metric!r} is listed twice")
            extras.add(metric)
        return self

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


class Scenario(_Strict):
    """A scripted account: exactly these models, in this order."""

    models: tuple[ScriptedModel, ...] = Field(strict=False)

    @model_validator(mode="after")
    def _names_are_unique(self) -> Scenario:
        names: dict[str, int] = {}
        for i, model in enumerate(self.models):
            if model.name in names:
                raise _fail(
                    f"models[{i}].name", f"{model.name!r} is also models[{names[model.name]}]"
                )
            names[model.name] = i
        return self

    @classmethod
    def from_dict(cls, data: object) -> Scenario:
        """Build from the parsed contents of a scenario file: ``{"models": [...]}``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise scenario_error(exc) from None

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


_MODELS: Final = (Scenario, ScriptedModel, ScriptedSpike)


def scripted_rng(script: ScriptedModel, purpose: str) -> random.Random:
    """A stream that depends on the scripted model alone, not on the account around it."""
    return random.Random(f"scenario:{script.seed}:{script.name}:{purpose}")


def noise(rng: random.Random) -> float:
    """A multiplicative factor within ``1 ± SCRIPTED_NOISE``."""
    return 1.0 + rng.uniform(-SCRIPTED_NOISE, SCRIPTED_NOISE)


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
