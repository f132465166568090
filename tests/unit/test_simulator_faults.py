"""Fault specs, their JSON form and how the injector picks faults for requests."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.simulator import Fault, FaultInjector
from exporter.simulator.faults import ENDPOINTS, KINDS, MIN_HUGE_BYTES, OPERATIONS, targets

MODEL = "4a5b7c1e-0000-4000-8000-000000000001"
OTHER = "4a5b7c1e-0000-4000-8000-000000000002"


@pytest.mark.parametrize("kind", KINDS)
def test_parse_every_kind(kind: str) -> None:
    assert Fault.parse(f"kind={kind}") == Fault(kind=kind)  # type: ignore[arg-type]


def test_parse_every_key() -> None:
    fault = Fault.parse(
        "kind=status,status=502,endpoint=list_step_metrics,model="
        + MODEL
        + ",probability=0.2,count=3,retry_after=seconds,retry_after_seconds=7,"
        "hang_seconds=1.5,trickle_interval=0.01,huge_bytes=4096"
    )
    assert fault == Fault(
        kind="status",
        status=502,
        endpoint="list_step_metrics",
        model=MODEL,
        probability=0.2,
        count=3,
        retry_after="seconds",
        retry_after_seconds=7,
        hang_seconds=1.5,
        trickle_interval=0.01,
        huge_bytes=4096,
    )


def test_parse_examples_and_unset_values() -> None:
    assert Fault.parse("kind=rate-limit,retry_after=http-date,retry_after_seconds=5") == Fault(
        kind="rate-limit", retry_after="http-date", retry_after_seconds=5
    )
    assert Fault.parse(" kind = hang , hang_seconds = 2 ,") == Fault(kind="hang", hang_seconds=2)
    assert Fault.parse("kind=reset,model=none,count=,retry_after=None") == Fault(kind="reset")


def test_defaults() -> None:
    fault = Fault(kind="status")
    assert (fault.endpoint, fault.model, fault.probability, fault.count) == ("any", None, 1.0, None)
    assert (fault.status, fault.retry_after, fault.retry_after_seconds) == (503, None, 2)
    assert (fault.hang_seconds, fault.trickle_interval) == (300.0, 0.05)
    assert fault.huge_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("kind=explode", "kind"),
        ("status=503", "kind"),  # kind is required
        ("", "kind"),
        ("kind=status,colour=red", "colour"),
        ("kind=status,kind=reset", "kind"),
        ("kind=status,probability=0", "probability"),
        ("kind=status,probability=1.5", "probability"),
        ("kind=status,probability=-0.1", "probability"),
        ("kind=status,probability=nan", "probability"),
        ("kind=status,probability=often", "probability"),
        ("kind=status,count=-1", "count"),
        ("kind=status,count=0", "count"),
        ("kind=status,count=2.5", "count"),
        ("kind=status,status=200", "status"),
        ("kind=status,status=99", "status"),
        ("kind=status,status=600", "status"),
        ("kind=status,status=teapot", "status"),
        ("kind=status,endpoint=delete_model", "endpoint"),
        ("kind=string-step,endpoint=get_model", "endpoint"),
        ("kind=unknown-status,endpoint=list_events", "endpoint"),
        ("kind=repeat-token,endpoint=get_model", "endpoint"),
        ("kind=status,endpoint=list_models,model=" + MODEL, "model"),
        ("kind=rate-limit,retry_after=tomorrow", "retry_after"),
        ("kind=rate-limit,retry_after_seconds=-1", "retry_after_seconds"),
        ("kind=hang,hang_seconds=-1", "hang_seconds"),
        ("kind=trickle,trickle_interval=inf", "trickle_interval"),
        ("kind=huge-body,huge_bytes=3", "huge_bytes"),
        ("kind=status,status", "status"),  # no "="
    ],
)
def test_bad_specs_name_the_key(spec: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Fault.parse(spec)


def test_every_field_reads_back_from_a_spec() -> None:
    fault = Fault(
        kind="rate-limit",
        endpoint="get_model",
        model=MODEL,
        probability=0.25,
        count=4,
        status=502,
        retry_after="http-date",
        retry_after_seconds=11,
        hang_seconds=2.5,
        trickle_interval=0.125,
        huge_bytes=2048,
        depth=12,
        entries=34,
        entry='{"id":"x"}',
        max_bytes=5678,
    )
    values = fault.to_json()
    assert all(value != Fault.model_fields[key].default for key, value in values.items())
    spec = ",".join(f"{key}={value}" for key, value in values.items())
    assert Fault.parse(spec) == fault


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("kind=status,model=" + "x" * 5000 + ",endpoint=list_models", "model"),
        ("kind=status,endpoint=" + "x" * 5000, "endpoint"),
        ("kind=" + "x" * 5000, "kind"),
        ("kind=status,status=" + "x" * 5000, "status"),
        ("kind=status," + "x" * 5000 + "=1", "unknown fault key"),
        ("kind=status," + "x" * 5000, "item"),
    ],
)
def test_errors_name_the_key_but_cut_a_huge_value(spec: str, key: str) -> None:
    with pytest.raises(ValueError, match=key) as caught:
        Fault.parse(spec)
    message = str(caught.value)
    assert "x" * 50 in message  # the start of the value is shown...
    assert "x" * 61 not in message  # ...but never more than 60 characters of it


def test_json_errors_cut_a_huge_value_too() -> None:
    with pytest.raises(ValueError, match="model") as caught:
        Fault.from_json({"kind": "status", "endpoint": "list_models", "model": "y" * 99})
    assert "y" * 61 not in str(caught.value)
    with pytest.raises(ValueError, match="object") as caught:
        Fault.from_json(["z" * 5000])
    assert "z" * 61 not in str(caught.value)


def test_hostile_defaults() -> None:
    fault = Fault(kind="entry-flood")
    assert (fault.depth, fault.entries, fault.entry) == (100_000, 1_000_000, "{}")
    assert fault.max_bytes == 8 * 1024 * 1024 - 1024


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("kind=deep-nesting,depth=0", "depth"),
        ("kind=deep-nesting,depth=deep", "depth"),
        ("kind=entry-flood,entries=-1", "entries"),
        ("kind=entry-flood,entry=", "entry"),
        ("kind=entry-flood,entry={id:x}", "entry"),
        ("kind=entry-flood,entry=NaN", "entry"),
        ("kind=entry-flood,entry=" + "1" * 70_000, "entry"),
        ("kind=entry-flood,max_bytes=63", "max_bytes"),
        ("kind=entry-flood,endpoint=get_model", "endpoint"),
        ("kind=deep-nesting,endpoint=get_model", "endpoint"),
    ],
)
def test_bad_hostile_specs_name_the_key(spec: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Fault.parse(spec)


def test_hostile_kinds_match_only_operations_answering_a_list() -> None:
    for kind in ("deep-nesting", "entry-flood"):
        injector = FaultInjector([Fault(kind=kind)])
        hits = {e for e in OPERATIONS["cohere"] if injector.pick(e, MODEL) is not None}
        assert hits == {"list_models", "list_events", "list_step_metrics"}


def test_smallest_huge_body_is_allowed() -> None:
    assert Fault(kind="huge-body", huge_bytes=MIN_HUGE_BYTES).huge_bytes == MIN_HUGE_BYTES


def test_json_round_trip() -> None:
    faults = [
        Fault(kind="status", status=410, endpoint="get_model", model=MODEL, count=1),
        Fault(kind="rate-limit", retry_after="http-date", retry_after_seconds=9, probability=0.5),
        Fault(kind="trickle", trickle_interval=0.2),
        Fault(kind="huge-body", huge_bytes=1024),
        *(Fault(kind=kind) for kind in KINDS),  # type: ignore[arg-type]
    ]
    for fault in faults:
        data = fault.to_json()
        assert set(data) == set(Fault.model_fields)
        assert Fault.from_json(data) == fault
    assert Fault.from_json({"kind": "reset"}) == Fault(kind="reset")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ([], "object"),
        ({"status": 503}, "kind"),
        ({"kind": "status", "colour": "red"}, "colour"),
        ({"kind": 7}, "kind"),
        ({"kind": "status", "status": "503"}, "status"),
        ({"kind": "status", "status": True}, "status"),
        ({"kind": "status", "count": 1.0}, "count"),
        ({"kind": "status", "probability": "0.5"}, "probability"),
        ({"kind": "status", "model": 12}, "model"),
        ({"kind": "status", "model": ""}, "model"),
        ({"kind": "status", "probability": 0}, "probability"),
    ],
)
def test_bad_json_names_the_key(data: Any, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Fault.from_json(data)


def test_pick_matches_endpoint_and_model() -> None:
    injector = FaultInjector(
        [
            Fault(kind="status", status=500, endpoint="list_step_metrics", model=MODEL),
            Fault(kind="status", status=502, endpoint="get_model"),
        ]
    )
    first = injector.pick("list_step_metrics", MODEL)
    assert first is not None
    assert first.status == 500
    assert injector.pick("list_step_metrics", OTHER) is None
    assert injector.pick("list_events", MODEL) is None
    assert injector.pick("list_models", None) is None
    second = injector.pick("get_model", OTHER)
    assert second is not None
    assert second.status == 502
    assert injector.injected == {"status": 2}


def test_any_endpoint_matches_each_read_operation_only() -> None:
    injector = FaultInjector([Fault(kind="reset")])
    for endpoint in ENDPOINTS:
        assert injector.pick(endpoint, MODEL) is not None
    assert injector.pick("delete_model", MODEL) is None
    assert injector.injected == {"reset": len(ENDPOINTS)}


def test_kinds_bound_to_endpoints_skip_the_others() -> None:
    injector = FaultInjector(
        [Fault(kind="string-step"), Fault(kind="unknown-status"), Fault(kind="repeat-token")]
    )
    kinds = {e: getattr(injector.pick(e, MODEL), "kind", None) for e in OPERATIONS["cohere"]}
    assert kinds == {
        "list_models": "unknown-status",
        "get_model": "unknown-status",
        "list_events": "repeat-token",
        "list_step_metrics": "string-step",
    }


def test_first_match_wins_in_order() -> None:
    injector = FaultInjector([Fault(kind="hang"), Fault(kind="reset")])
    fault = injector.pick("get_model", MODEL)
    assert fault is not None
    assert fault.kind == "hang"


def _sequence(seed: int, n: int = 200) -> list[bool]:
    injector = FaultInjector([Fault(kind="status", probability=0.3)], seed=seed)
    return [injector.pick("list_models", None) is not None for _ in range(n)]


def test_probability_is_repeatable_with_the_seed() -> None:
    first = _sequence(seed=7)
    assert first == _sequence(seed=7)
    assert first != _sequence(seed=8)
    assert 30 < sum(first) < 90  # about 0.3 of 200


def test_count_runs_out() -> None:
    fault = Fault(kind="status", count=2)
    injector = FaultInjector([fault, Fault(kind="list-body", endpoint="get_model")])
    assert injector.active[0] == fault
    assert injector.pick("get_model", MODEL) == fault
    assert injector.active[0] == fault.model_copy(update={"count": 1})
    assert injector.pick("get_model", MODEL) == fault
    third = injector.pick("get_model", MODEL)
    assert third is not None
    assert third.kind == "list-body"
    assert [f.kind for f in injector.active] == ["list-body"]
    assert injector.pick("list_models", None) is None
    assert injector.injected == {"status": 2, "list-body": 1}


def test_spared_requests_do_not_use_up_count() -> None:
    injector = FaultInjector([Fault(kind="status", probability=0.5, count=3)], seed=1)
    fired = sum(injector.pick("list_models", None) is not None for _ in range(100))
    assert fired == 3
    assert not injector.active


def test_set_replaces_and_clear_empties() -> None:
    injector = FaultInjector([Fault(kind="reset")])
    injector.set([Fault(kind="hang", count=1), Fault(kind="html-200")])
    assert [f.kind for f in injector.active] == ["hang", "html-200"]
    injector.pick("list_models", None)
    injector.set([Fault(kind="hang", count=1)])  # a fresh count
    assert injector.active == (Fault(kind="hang", count=1),)
    injector.clear()
    assert not injector.active
    assert injector.pick("list_models", None) is None
    assert injector.injected == {"hang": 1}


def test_each_provider_has_its_own_operations() -> None:
    assert targets("status", "cohere") == tuple(OPERATIONS["cohere"])
    assert targets("status", "together") == tuple(OPERATIONS["together"])
    assert targets("string-step", "together") == ("list_metrics",)
    assert targets("unknown-status", "together") == ("list_jobs", "get_job")
    assert targets("repeat-token", "together") == ()  # nothing is paged
    lists = {op for op, field in OPERATIONS["together"].items() if field is not None}
    assert set(targets("entry-flood", "together")) == lists
    assert set(targets("deep-nesting", "together")) == lists


def test_a_bound_injector_matches_its_providers_operations_only() -> None:
    injector = FaultInjector([Fault(kind="repeat-token", count=5), Fault(kind="html-200")])
    with pytest.raises(ValueError, match="repeat-token"):
        injector.bind("together")
    assert injector.provider is None  # refused: nothing changed
    injector.set([Fault(kind="string-step"), Fault(kind="html-200")])
    injector.bind("together")
    assert injector.provider == "together"
    kinds = {e: getattr(injector.pick(e, MODEL), "kind", None) for e in OPERATIONS["together"]}
    assert kinds == {
        "list_jobs": "html-200",
        "get_job": "html-200",
        "list_metrics": "string-step",
        "list_events": "html-200",
        "list_checkpoints": "html-200",
    }
    assert injector.pick("list_step_metrics", MODEL) is None  # a Cohere operation
    with pytest.raises(ValueError, match="endpoint"):
        injector.set([Fault(kind="status", endpoint="list_models")])
    assert [f.kind for f in injector.active] == ["string-step", "html-200"]
    with pytest.raises(ValueError, match="unknown provider"):
        injector.bind("openai")


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("kind=status,endpoint=list_jobs,model=ft-1", "model"),
        ("kind=string-step,endpoint=get_job", "endpoint"),
        ("kind=unknown-status,endpoint=list_metrics", "endpoint"),
        ("kind=repeat-token,endpoint=list_jobs", "endpoint"),
    ],
)
def test_together_operations_have_the_same_rules(spec: str, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        Fault.parse(spec)
