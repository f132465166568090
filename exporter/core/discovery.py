"""Which runs exist: the configured IDs, or the account's list, with shards and limits applied.

Both ways end in one ``Discovered``: the runs found, the configured runs that the API says do
not exist, and the lookups that failed (whose runs keep what was known). Shards and
``--limits.max-models`` are applied here and nowhere else.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.core.concurrency import bounded
from exporter.core.problems import ProblemLog
from exporter.core.provider import Provider, Run
from exporter.core.sharding import Shard
from exporter.upstream.errors import ApiError, ApiStatusError


@dataclass
class Discovered:
    """One discovery's findings. ``complete``: a listing, so runs not in it have left."""

    runs: dict[str, Run] = field(default_factory=dict)
    missing: dict[str, ApiError] = field(default_factory=dict)
    failures: dict[str, ApiError] = field(default_factory=dict)
    complete: bool = False
    dropped: int = 0


class Discovery:
    """Finds the runs one provider's poller tracks."""

    def __init__(
        self,
        provider: Provider,
        *,
        run_ids: Sequence[str],
        max_runs: int,
        shard: Shard,
        concurrency: int,
    ) -> None:
        self._provider = provider
        self._run_ids = tuple(run_ids)
        self._max_runs = max_runs
        self._shard = shard
        self._concurrency = concurrency

    @property
    def configured(self) -> bool:
        return bool(self._run_ids)

    def report(self, problems: ProblemLog, exc: ApiError | None) -> None:
        """Log a discovery problem once; a listing that answers 404 or 410 means the URL
        serves no fine-tuning at all, which deserves its own words."""
        name = self._provider.name
        gone = isinstance(exc, ApiStatusError) and exc.status in (404, 410)
        problems.report(
            ("discovery", name),
            None if exc is None else exc.describe(),
            failed=f"the API at this URL serves no fine-tuning; check --{name}.api-url"
            if gone and not self.configured
            else "run discovery failed",
            recovered="run discovery recovered",
            level=logging.ERROR if gone else logging.WARNING,
            provider=name,
        )

    async def discover(self) -> Discovered:
        """Raises the first ``ApiError`` when nothing at all could be learned."""
        if self._run_ids:
            return await self._look_up()
        return await self._list()

    async def _list(self) -> Discovered:
        """This shard's runs of the listing, the ``max_runs`` most recently created of them.

        Pages are read one at a time and only the newest ``max_runs`` runs are kept (a heap),
        so a huge account costs time, never memory.
        """
        kept: list[tuple[float, str, Run]] = []  # min-heap: the oldest kept run on top
        owned = 0
        async for page in self._provider.list_runs():
            for run in page:
                if not run.id or not self._shard.owns(run.id):
                    continue
                owned += 1
                entry = (run.created_at or 0.0, run.id, run)
                if len(kept) < self._max_runs:
                    heapq.heappush(kept, entry)
                elif entry[:2] > kept[0][:2]:
                    heapq.heapreplace(kept, entry)
        runs = {run.id: run for _, _, run in kept}
        return Discovered(runs=runs, complete=True, dropped=max(0, owned - self._max_runs))

    async def _look_up(self) -> Discovered:
        mine = [run_id for run_id in self._run_ids if self._shard.owns(run_id)]
        ids = mine[: self._max_runs]
        found = Discovered(dropped=len(mine) - len(ids))

        async def look_up(run_id: str) -> None:
            try:
                found.runs[run_id] = await self._provider.get_run(run_id)
            except ApiStatusError as exc:
                if exc.status == 404:
                    found.missing[run_id] = exc
                else:
                    found.failures[run_id] = exc
            except ApiError as exc:
                found.failures[run_id] = exc

        await bounded(look_up, ids, self._concurrency)
        if ids and len(found.failures) == len(ids):
            raise next(iter(found.failures.values()))
        return found
