"""The exposition cache: model data encoded once per snapshot, live counters every scrape."""

from __future__ import annotations

import gzip

import pytest
from prometheus_client import Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry

from exporter import contract as c
from exporter import exposition
from exporter.core.snapshot import Snapshot
from exporter.encoding import FORMATS
from exporter.exposition import PROMETHEUS_3_ACCEPT, EncodedSnapshot, ExpositionCache
from exporter.families import CONCERNS
from tests.snapshots import cohere_view, snapshot_of, step, together_view

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def snapshot(version: int, loss: float) -> Snapshot:
    newest = step(version, 1.0, {"cross_entropy": loss})
    model = cohere_view("m", "m", "STATUS_FINETUNING", newest_step=newest, up=True)
    return snapshot_of(model, up=True, version=version)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def build(clock: Clock | None = None) -> tuple[ExpositionCache, Counter]:
    """A cache with the first snapshot published (prepared, as the hub does before a swap)."""
    live_registry = CollectorRegistry(auto_describe=False)
    requests = Counter("finetune_api_requests", "r", ["code"], registry=live_registry)
    cache = ExpositionCache(live_registry, clock=clock or Clock())
    cache.prepare(snapshot(1, 0.5))
    return cache, requests


def test_model_part_is_encoded_once_per_snapshot() -> None:
    clock = Clock()
    cache, requests = build(clock)
    for _ in range(5):
        requests.labels("200").inc()
        clock.now += 1.0  # each scrape a second apart: the live part is rendered each time
        cache.body("", use_gzip=False)
        cache.body(PROMETHEUS_3_ACCEPT, use_gzip=True)
    assert cache.renders == 1
    assert cache.live_renders == 10
    body, _ = cache.body("", use_gzip=False)
    assert b'finetune_api_requests_total{code="200"} 5.0' in body
    cache.prepare(snapshot(2, 0.25))
    body, _ = cache.body("", use_gzip=False)
    assert cache.renders == 2
    assert b'finetune_step_cross_entropy{finetune_id="m",provider="cohere"} 0.25' in body


def test_a_burst_of_scrapes_shares_one_body_for_a_second() -> None:
    clock = Clock()
    cache, requests = build(clock)
    first, _ = cache.parts("", use_gzip=False)
    requests.labels("200").inc()
    clock.now = 0.5
    again, _ = cache.parts("", use_gzip=False)
    assert all(a is b for a, b in zip(again, first, strict=True))  # same bytes, not re-rendered
    assert cache.live_renders == 1
    clock.now = 1.0
    fresh, _ = cache.body("", use_gzip=False)
    assert b'finetune_api_requests_total{code="200"} 1.0' in fresh
    cache.prepare(snapshot(2, 0.25))  # a new snapshot is served at once, whatever the age
    clock.now = 1.1
    assert b"} 0.25" in cache.body("", use_gzip=False)[0]


def test_text_body_parses_as_one_exposition() -> None:
    cache, requests = build()
    requests.labels("503").inc()
    body, content_type = cache.body("text/plain", use_gzip=False)
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {family.name for family in parse_text(body.decode())}
    assert {"finetune_step_cross_entropy", "finetune_api_requests"} <= names


def test_openmetrics_body_has_one_eof_at_the_end() -> None:
    cache, requests = build()
    requests.labels("200").inc()
    body, content_type = cache.body(OPENMETRICS, use_gzip=False)
    assert content_type.startswith("application/openmetrics-text")
    assert body.count(b"# EOF") == 1
    assert body.endswith(b"# EOF\n")
    names = {family.name for family in parse_om(body.decode())}  # type: ignore[no-untyped-call]
    assert {"finetune_step_cross_entropy", "finetune_api_requests"} <= names


def test_gzip_members_decode_to_the_plain_body() -> None:
    cache, requests = build()
    requests.labels("200").inc()
    for accept in ("", OPENMETRICS):
        zipped, _ = cache.body(accept, use_gzip=True)
        plain, _ = cache.body(accept, use_gzip=False)
        assert zipped[:2] == b"\x1f\x8b"
        assert gzip.decompress(zipped) == plain
    assert cache.renders == 1  # every format prepared once, when the snapshot was published


def bodies(encoded: EncodedSnapshot) -> dict[str, bytes]:
    """Every run-part body of an encoding: each format, plain and gzip decoded."""
    found: dict[str, bytes] = {}
    for fmt in FORMATS:
        found[f"{fmt} plain"] = b"".join(encoded.plain[fmt])
        found[f"{fmt} gzip"] = gzip.decompress(b"".join(encoded.zipped[fmt]))
    return found


def samples_of(encoded: EncodedSnapshot, family: str) -> bytes:
    return next(b.samples for c in encoded.concerns for b in c.blocks if b.family.name == family)


def two_runs(*, loss: float, polled_at: float, keep: bool = True) -> Snapshot:
    views = [
        cohere_view(
            "a",
            "a",
            "STATUS_FINETUNING",
            newest_step=step(3, 1.0, {"loss": loss}),
            up=True,
            last_success=polled_at,
        ),
        cohere_view(
            "b",
            "b",
            "STATUS_READY",
            newest_step=step(9, 2.0, {"loss": 0.5}),
            up=True,
            last_success=polled_at,
        ),
    ]
    return snapshot_of(*(views if keep else views[:1]), up=True, version=int(polled_at))


def test_a_publication_with_nothing_new_rewrites_only_the_poll_times() -> None:
    first = EncodedSnapshot.of(two_runs(loss=0.9, polled_at=100.0))
    second = EncodedSnapshot.of(two_runs(loss=0.9, polled_at=160.0), first)
    assert samples_of(second, "finetune_step_loss") is samples_of(first, "finetune_step_loss")
    assert samples_of(second, c.RUN_PHASE.name) is samples_of(first, c.RUN_PHASE.name)
    assert b"} 160.0\n" in samples_of(second, c.RUN_LAST_SUCCESS.name)
    assert bodies(second) == bodies(EncodedSnapshot.of(two_runs(loss=0.9, polled_at=160.0)))


def test_a_changed_value_or_a_run_gone_is_written_again() -> None:
    first = EncodedSnapshot.of(two_runs(loss=0.9, polled_at=100.0))
    changed = EncodedSnapshot.of(two_runs(loss=0.4, polled_at=100.0), first)
    assert b"} 0.4\n" in samples_of(changed, "finetune_step_loss")
    assert samples_of(changed, c.RUN_INFO.name) is samples_of(first, c.RUN_INFO.name)
    assert bodies(changed) == bodies(EncodedSnapshot.of(two_runs(loss=0.4, polled_at=100.0)))
    gone = EncodedSnapshot.of(two_runs(loss=0.4, polled_at=100.0, keep=False), changed)
    assert b'finetune_id="b"' not in b"".join(bodies(gone).values())
    fresh = EncodedSnapshot.of(two_runs(loss=0.4, polled_at=100.0, keep=False))
    assert bodies(gone) == bodies(fresh)


def both_providers(*, cohere_loss: float, together_loss: float, shared: float) -> Snapshot:
    """A run of each provider; both log ``accuracy``, so one family holds both providers."""
    return snapshot_of(
        cohere_view(
            "c1",
            "c1",
            "STATUS_FINETUNING",
            newest_step=step(4, 1.0, {"cross_entropy": cohere_loss, "accuracy": shared}),
            up=True,
        ),
        together_view(
            "ft-1",
            "t1",
            "running",
            newest_step=step(7, 2.0, {"train/loss": together_loss, "accuracy": shared}),
        ),
        up=True,
    )


def test_a_change_at_one_provider_keeps_the_other_providers_bytes() -> None:
    first = EncodedSnapshot.of(both_providers(cohere_loss=0.9, together_loss=0.7, shared=0.5))
    later = both_providers(cohere_loss=0.8, together_loss=0.7, shared=0.5)
    second = EncodedSnapshot.of(later, first)

    def rewritten(provider: str) -> set[str]:
        pairs = zip(first.by_provider[provider], second.by_provider[provider], strict=True)
        return {
            concern.write.__name__
            for concern, (old, new) in zip(CONCERNS, pairs, strict=True)
            if new is not old
        }

    assert rewritten("together") == {"last_success_blocks"}  # new with every publication
    assert rewritten("cohere") == {"last_success_blocks", "step_blocks"}
    assert bodies(second) == bodies(EncodedSnapshot.of(later))


def test_a_family_both_providers_fill_comes_once_with_both_sources() -> None:
    encoded = EncodedSnapshot.of(both_providers(cohere_loss=0.9, together_loss=0.7, shared=0.5))
    for fmt in FORMATS:
        parse = parse_om if fmt == "openmetrics" else parse_text
        body = b"".join(encoded.plain[fmt]).decode()
        if fmt == "openmetrics":
            body += "# EOF\n"
        families = [family.name for family in parse(body)]
        assert len(families) == len(set(families))  # every family once, all its samples together
        accuracy = next(f for f in parse(body) if f.name == "finetune_step_accuracy")
        assert "'accuracy' (cohere), 'accuracy' (together)" in accuracy.documentation
        assert {s.labels["provider"] for s in accuracy.samples} == {"cohere", "together"}
    assert body.index("finetune_step_accuracy") < body.index("finetune_step_cross_entropy")
    assert body.index("finetune_step_cross_entropy") < body.index("finetune_step_train_loss")


def test_a_small_body_is_served_in_one_piece_and_a_large_one_in_its_parts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    changed = two_runs(loss=0.9, polled_at=100.0)
    small = EncodedSnapshot.of(changed)
    assert all(len(small.plain[fmt]) == 1 and len(small.zipped[fmt]) == 1 for fmt in FORMATS)
    monkeypatch.setattr(exposition, "JOINED_BODY_BYTES", 100)
    large = EncodedSnapshot.of(changed)
    assert all(len(large.plain[fmt]) > 10 and len(large.zipped[fmt]) > 10 for fmt in FORMATS)
    assert bodies(large) == bodies(small)
