"""Shards split the models exactly, and a growing account does not move anyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from exporter.core.sharding import Shard, shard_of
from exporter.settings import ConfigError, load_settings

IDS = [str(uuid.UUID(int=n * 7919 + 1, version=4)) for n in range(3000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_model_in_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for model_id in IDS:
        assert sum(shard.owns(model_id) for shard in shards) == 1
    sizes = [sum(shard.owns(m) for m in IDS) for shard in shards]
    assert min(sizes) > len(IDS) / count * 0.85  # roughly even


# Pinned: replicas of different versions must agree, so the assignment may never change.
# Each is the first 8 bytes of SHA-256 of the ID, big-endian, modulo the count.
GOLDEN = {
    "fee37446-7fc7-42f9-a026-c6ba2fcc422d": (0, 0, 5, 966),
    "ft-44129430-ac08-4136-9774-aed81e0164a4": (0, 2, 5, 510),
    "model-alpha": (0, 2, 3, 574),
    "a": (0, 1, 4, 458),
}


@pytest.mark.parametrize(("run_id", "shards"), GOLDEN.items())
def test_golden_assignments(run_id: str, shards: tuple[int, ...]) -> None:
    assert tuple(shard_of(run_id, count) for count in (2, 3, 7, 1024)) == shards


def test_assignment_is_the_same_in_every_process() -> None:
    """Python salts ``hash`` per process; the shard must not depend on it."""
    here = {m: shard_of(m, 7) for m in IDS[:300]}
    script = (
        "import json, sys; from exporter.core.sharding import shard_of; "
        "print(json.dumps({m: shard_of(m, 7) for m in json.load(sys.stdin)}))"
    )
    for seed in ("0", "1", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(IDS[:300]),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(done.stdout) == here, seed


def test_index_must_be_below_count() -> None:
    with pytest.raises(ConfigError, match=r"--shard\.index"):
        load_settings(shard_count="2", shard_index="2")
    assert load_settings(shard_count="2", shard_index="1").shard_index == 1
