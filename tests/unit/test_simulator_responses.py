"""The streamed bodies of the hostile faults: right size, valid JSON, sent in bounded chunks."""

from __future__ import annotations

import json

import pytest

from exporter.simulator.responses import flood_chunks, flood_layout, nesting_chunks

CHUNK_LIMIT = 128 * 1024  # no chunk may hold much more than the 64 KiB the module aims at


def test_nesting_chunks_open_then_close_depth_brackets() -> None:
    depth = 200_003
    chunks = list(nesting_chunks(depth))
    assert max(len(c) for c in chunks) <= CHUNK_LIMIT
    body = b"".join(chunks)
    assert body == b"[" * depth + b"]" * depth


def test_small_nesting_is_json_lists_within_lists() -> None:
    value = json.loads(b"".join(nesting_chunks(3)))
    assert value == [[[]]]


@pytest.mark.parametrize("entry", ["{}", '{"id":"x"}', "7", '"\u00e9t\u00e9"'])
@pytest.mark.parametrize("entries", [0, 1, 2, 100_001])
def test_flood_body_matches_its_layout(entry: str, entries: int) -> None:
    count, size = flood_layout("metrics", entry, entries, max_bytes=10_000_000)
    assert count == entries  # the cap is far away
    chunks = list(flood_chunks("metrics", entry, count))
    assert max(len(c) for c in chunks) <= CHUNK_LIMIT
    body = b"".join(chunks)
    assert len(body) == size
    assert json.loads(body) == {"metrics": [json.loads(entry)] * entries}


@pytest.mark.parametrize("entry", ["{}", '{"id":"x"}', '{"name":"a long entry of text"}'])
@pytest.mark.parametrize("max_bytes", [64, 65, 1000, 8 * 1024 * 1024 - 1024])
def test_flood_is_cut_to_the_most_entries_that_fit(entry: str, max_bytes: int) -> None:
    count, size = flood_layout("finetuned_models", entry, 10**9, max_bytes)
    assert size <= max_bytes
    one_more = size + len(entry.encode()) + (1 if count else 0)
    assert one_more > max_bytes  # so no further entry would have fitted
    body = b"".join(flood_chunks("finetuned_models", entry, count))
    assert len(body) == size
    assert len(json.loads(body)["finetuned_models"]) == count


def test_flood_of_ids_sends_about_800k_of_them() -> None:
    count, size = flood_layout("data", '{"id":"x"}', 1_000_000, 8 * 1024 * 1024 - 1024)
    assert 700_000 < count < 800_000
    assert size <= 8 * 1024 * 1024 - 1024
