"""Fault injection for the simulated APIs: the failures the exporter must survive, on demand.

A ``Fault`` says what goes wrong (an error status, a 429, a dropped connection, a hung or
trickling answer, a malformed or enormous body, a page token that never ends, JSON nested
100,000 deep or a list of a million entries) and for which
requests (operation, run, probability, how many times). A ``FaultInjector`` holds the active
faults and picks, per API request, the first one that fires; the provider apps consult it after
authentication and request counting, and ``exporter.simulator.responses.respond`` turns the
picked fault into what the client sees. Random decisions come from a seeded ``random.Random``,
so a run repeats exactly.

``Fault`` is a pydantic model: its fields are the one description of every key, used to parse
``kind=status,status=503,count=3`` specs, the JSON form and the ``/simulator/faults`` body.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

FaultKind = Literal[
    "status",
    "rate-limit",
    "reset",
    "hang",
    "trickle",
    "invalid-json",
    "list-body",
    "string-step",
    "unknown-status",
    "html-200",
    "huge-body",
    "repeat-token",
    "deep-nesting",
    "entry-flood",
]
RetryAfter = Literal["seconds", "http-date"]

#: Every fault kind, in declaration order.
KINDS: Final[tuple[str, ...]] = get_args(FaultKind)

#: Per provider, the API operations a fault can target (the request kinds its simulator counts),
#: each with the field of its answer that holds a list (``None``: the answer is one object).
OPERATIONS: Final[Mapping[str, Mapping[str, str | None]]] = {
    "cohere": {
        "list_models": "finetuned_models",
        "get_model": None,
        "list_events": "events",
        "list_step_metrics": "step_metrics",
    },
    "together": {
        "list_jobs": "data",
        "get_job": None,
        "list_metrics": "metrics",
        "list_events": "data",
        "list_checkpoints": "data",
    },
}
#: Every operation of every provider; ``"any"`` matches each of them.
ENDPOINTS: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(op for ops in OPERATIONS.values() for op in ops)
)

#: Kinds that only make sense on some operations: with ``endpoint="any"`` they match only these.
_LIMITED: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = {
    "cohere": {
        "string-step": ("list_step_metrics",),
        "unknown-status": ("list_models", "get_model"),
        "repeat-token": ("list_models", "list_events", "list_step_metrics"),
    },
    "together": {
        "string-step": ("list_metrics",),
        "unknown-status": ("list_jobs", "get_job"),
        "repeat-token": (),  # Together's lists are not paged: there is no token to repeat
    },
}
#: Kinds that apply to every operation whose answer holds a list.
_LIST_KINDS: Final = frozenset({"deep-nesting", "entry-flood"})
#: Operations that name no run, so a fault aimed at one run cannot apply to them.
_RUNLESS: Final = frozenset({"list_models", "list_jobs"})

#: The smallest huge body: ``{"simulator_padding":""}``.
MIN_HUGE_BYTES: Final = len(b'{"simulator_padding":""}')
#: The smallest cap of an entry flood: room for the envelope of any list, ``{"field":[]}``.
MIN_FLOOD_BYTES: Final = 64
#: The longest ``entry`` a flood repeats.
MAX_ENTRY_CHARS: Final = 64 * 1024
#: The longest value an error message repeats back.
_ECHO: Final = 60

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def targets(kind: str, provider: str | None = None) -> tuple[str, ...]:
    """The operations a fault of ``kind`` can apply to, for one provider or (``None``) any."""
    providers = OPERATIONS if provider is None else {provider: OPERATIONS[provider]}
    found: list[str] = []
    for name, operations in providers.items():
        if kind in _LIST_KINDS:
            found += [op for op, field in operations.items() if field is not None]
        else:
            limited = _LIMITED[name].get(kind)
            found += operations if limited is None else limited
    return tuple(dict.fromkeys(found))


def _no_constant(name: str) -> Any:
    """Refuse ``NaN`` and ``Infinity``, which Python's JSON reader accepts and JSON does not."""
    raise ValueError(f"{name} is not JSON")


def _cut(value: Any) -> str:
    """``repr(value)``, cut to ``_ECHO`` characters: a bad value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


class Fault(BaseModel):
    """One kind of failure and the requests it applies to.

    ``count`` is how many injections are left (``None``: no limit); a request the fault matches
    but ``probability`` spares does not use one up. Values are checked on construction: a bad one
    raises ``ValueError`` naming the key (pydantic's ``ValidationError`` is one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: FaultKind
    endpoint: str = "any"
    model: Annotated[str, Field(min_length=1)] | None = None
    probability: Annotated[FiniteFloat, Field(gt=0, le=1)] = 1.0
    count: Annotated[int, Field(ge=1)] | None = None
    status: Annotated[int, Field(ge=400, le=599)] = 503
    retry_after: RetryAfter | None = None
    retry_after_seconds: Annotated[int, Field(ge=0)] = 2
    hang_seconds: Annotated[FiniteFloat, Field(ge=0)] = 300.0
    trickle_interval: Annotated[FiniteFloat, Field(ge=0)] = 0.05
    huge_bytes: Annotated[int, Field(ge=MIN_HUGE_BYTES)] = 64 * 1024 * 1024
    #: deep-nesting: how many ``[`` open (and then close) the answer.
    depth: Annotated[int, Field(ge=1)] = 100_000
    #: entry-flood: how many copies of ``entry`` the answer's list holds (before the cap)...
    entries: Annotated[int, Field(ge=0)] = 1_000_000
    #: ...each this JSON text (a spec cannot hold a comma: use the JSON form for such entries)...
    entry: Annotated[str, Field(min_length=1, max_length=MAX_ENTRY_CHARS)] = "{}"
    #: ...and the whole body at most this many bytes (entries are cut to fit).
    max_bytes: Annotated[int, Field(ge=MIN_FLOOD_BYTES)] = 8 * 1024 * 1024 - 1024

    @field_validator("entry")
    @classmethod
    def _entry_is_json(cls, entry: str) -> str:
        try:
            json.loads(entry, parse_constant=_no_constant)
        except ValueError:
            raise ValueError('expected one JSON value, e.g. {} or {"id":"x"}') from None
        return entry

    @model_validator(mode="after")
    def _endpoint_fits(self) -> Fault:
        if self.endpoint != "any" and self.endpoint not in ENDPOINTS:
            raise ValueError(
                f"endpoint={_cut(self.endpoint)}: expected any, {', '.join(ENDPOINTS)}"
            )
        allowed = targets(self.kind)
        if self.endpoint not in ("any", *allowed):
            raise ValueError(
                f"endpoint={_cut(self.endpoint)}: a {self.kind} fault applies to "
                + ", ".join(allowed)
            )
        if self.model is not None and self.endpoint in _RUNLESS:
            raise ValueError(f"model={_cut(self.model)}: {self.endpoint} requests name no run")
        return self

    def check_provider(self, provider: str) -> None:
        """Raise ``ValueError`` unless this fault can fire on ``provider``'s simulator."""
        allowed = targets(self.kind, provider)
        if not allowed:
            raise ValueError(f"kind={self.kind}: no {provider} operation has this fault")
        if self.endpoint not in ("any", *allowed):
            raise ValueError(
                f"endpoint={_cut(self.endpoint)}: a {self.kind} fault on {provider} applies to "
                + ", ".join(allowed)
            )

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """Parse ``key=value`` pairs separated by commas, e.g. ``kind=status,status=503,count=3``.

        ``kind`` is required. Each value is read as its field's type; a field that may be unset
        (``model``, ``count``, ``retry_after``) takes ``none`` (or nothing) for "unset".
        """
        values: dict[str, Any] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep:
                raise ValueError(f"invalid fault spec item {_cut(item)}: expected key=value")
            if key in values:
                raise ValueError(f"invalid fault spec: {key} given twice")
            unset = raw.lower() in ("", "none", "null")
            values[key] = None if unset and key in _NULLABLE else raw
        return cls._validated(values, strict=False)

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready; ``from_json`` reads it back."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from an object of fields (``kind`` required, the rest default)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"invalid fault {_cut(data)}: expected an object")
        return cls._validated(dict(data), strict=True)

    @classmethod
    def _validated(cls, values: dict[str, Any], *, strict: bool) -> Fault:
        try:
            return cls.model_validate(values, strict=strict)
        except ValidationError as exc:
            raise ValueError(_describe(exc)) from None


#: Fields that may be unset (their type admits ``None``), as the model declares them.
_NULLABLE: Final = frozenset(
    name
    for name, field in Fault.model_fields.items()
    if type(None) in typing.get_args(field.annotation)
)


def _describe(exc: ValidationError) -> str:
    """The first problem, naming its key and never echoing more than ``_ECHO`` characters."""
    error = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"invalid fault: {loc} is required"
    if error["type"] == "extra_forbidden":
        return f"unknown fault key {_cut(loc)}: expected one of {', '.join(Fault.model_fields)}"
    if not loc:
        return f"invalid fault {message}"
    return f"invalid fault {loc}={_cut(error['input'])}: {message}"


class FaultInjector:
    """The active faults of one simulator, and what they injected so far.

    ``bind`` ties the injector to the provider of the app serving it: faults that cannot fire
    there are refused from then on, and ``endpoint="any"`` means that provider's operations.
    """

    def __init__(self, faults: Iterable[Fault] = (), seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._provider: str | None = None
        self._faults: list[Fault] = []
        self._left: list[int | None] = []
        #: Injections so far by fault kind; not reset by ``set`` or ``clear``.
        self.injected: collections.Counter[str] = collections.Counter()
        self.set(faults)

    @property
    def provider(self) -> str | None:
        """The provider this injector serves (``None`` until ``bind``)."""
        return self._provider

    def bind(self, provider: str) -> None:
        """Serve ``provider`` from now on; ``ValueError`` if an active fault cannot fire there."""
        if provider not in OPERATIONS:
            raise ValueError(f"unknown provider {provider!r}")
        with self._lock:
            for fault in self._faults:
                fault.check_provider(provider)
            self._provider = provider

    def set(self, faults: Iterable[Fault]) -> None:
        """Replace the active faults (first match wins, so order matters)."""
        new = list(faults)
        with self._lock:
            if self._provider is not None:
                for fault in new:
                    fault.check_provider(self._provider)
            self._faults = new
            self._left = [f.count for f in new]

    def clear(self) -> None:
        """Stop injecting anything."""
        self.set(())

    @property
    def active(self) -> tuple[Fault, ...]:
        """Faults that can still fire, with ``count`` as the injections left."""
        with self._lock:
            return tuple(
                f if left == f.count else f.model_copy(update={"count": left})
                for f, left in zip(self._faults, self._left, strict=True)
                if left is None or left > 0
            )

    def pick(self, endpoint: str, run_id: str | None) -> Fault | None:
        """The first fault that matches this request and fires; uses up one of its ``count``."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                left = self._left[index]
                if left is not None and left <= 0:
                    continue
                if not self._matches(fault, endpoint, run_id):
                    continue
                if fault.probability < 1 and self._rng.random() >= fault.probability:
                    continue
                if left is not None:
                    self._left[index] = left - 1
                self.injected[fault.kind] += 1
                return fault
        return None

    def _matches(self, fault: Fault, endpoint: str, run_id: str | None) -> bool:
        if fault.endpoint not in ("any", endpoint):
            return False
        if endpoint not in targets(fault.kind, self._provider):
            return False
        return fault.model is None or fault.model == run_id
