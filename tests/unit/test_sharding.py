"""Shards split the models exactly, and a growing account does not move anyone."""

from __future__ import annotations

import uuid

import pytest

from exporter.config import ConfigError, load_settings
from exporter.sharding import Shard, shard_of

IDS = [str(uuid.UUID(int=n * 7919 + 1, version=4)) for n in range(3000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_model_in_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for model_id in IDS:
        assert sum(shard.owns(model_id) for shard in shards) == 1
    sizes = [sum(shard.owns(m) for m in IDS) for shard in shards]
    assert min(sizes) > len(IDS) / count * 0.85  # roughly even


def test_assignment_depends_on_the_id_alone() -> None:
    before = {m: shard_of(m, 5) for m in IDS[:1000]}
    grown = IDS[:1000] + [str(uuid.uuid4()) for _ in range(500)]
    assert all(shard_of(m, 5) == before[m] for m in grown[:1000])
    assert shard_of("fee37446-7fc7-42f9-a026-c6ba2fcc422d", 4) == shard_of(
        "fee37446-7fc7-42f9-a026-c6ba2fcc422d", 4
    )


def test_index_must_be_below_count() -> None:
    with pytest.raises(ConfigError, match=r"--shard\.index"):
        load_settings(shard_count="2", shard_index="2")
    assert load_settings(shard_count="2", shard_index="1").shard_index == 1
