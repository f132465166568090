"""Which models a replica polls when ``--shard.count`` replicas share one account.

The shard of a model depends on its ID alone (a stable hash, not Python's salted ``hash``), so
every replica agrees without talking to the others, no model is polled twice or missed, and a
new model never moves an existing one to another shard.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def shard_of(model_id: str, count: int) -> int:
    digest = hashlib.sha256(model_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def owns(self, model_id: str) -> bool:
        return self.count == 1 or shard_of(model_id, self.count) == self.index
