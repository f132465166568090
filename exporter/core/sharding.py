"""Which runs a replica polls when ``--shard.count`` replicas share one account.

The shard of a run depends on its ID alone (a stable hash, not Python's salted ``hash``), so
every replica agrees without talking to the others, no run is polled twice or missed, and a
new run never moves an existing one to another shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from exporter.settings import Settings


def shard_of(run_id: str, count: int) -> int:
    digest = hashlib.sha256(run_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Shard:
        return cls(settings.shard_index, settings.shard_count)

    def owns(self, run_id: str) -> bool:
        return self.count == 1 or shard_of(run_id, self.count) == self.index


EVERY_RUN = Shard(0, 1)
