"""``backfill --out FILE``: the step history of the selected models as an OpenMetrics file.

The file is written next to its destination and renamed into place only when every model has
been read, so a failed run never leaves a truncated history behind. On a terminal a progress
bar shows on stderr; otherwise the command is silent unless something goes wrong.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from exporter import providers
from exporter.backfill import BackfillResult, Progress, Source, backfill
from exporter.service import new_session
from exporter.settings import Settings

BAR_WIDTH = 30


def terminal_progress(stream: TextIO) -> Progress | None:
    """A one-line progress bar when ``stream`` is a terminal, else nothing at all."""
    if not stream.isatty():
        return None

    def show(done: int, total: int, name: str) -> None:
        filled = BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        stream.write(f"\r[{bar}] {done}/{total} models  {name[:40]:<40}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def run_backfill(settings: Settings, out: Path, stream: TextIO = sys.stderr) -> BackfillResult:
    """Write the history to ``out`` atomically: a temporary file renamed into place on success."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with open(descriptor, "w", encoding="utf-8") as handle:
            result = asyncio.run(read_history(settings, handle, terminal_progress(stream)))
        os.replace(temporary, out)
        return result
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


async def read_history(
    settings: Settings, handle: TextIO, progress: Progress | None
) -> BackfillResult:
    """Read through the same budgeted, retrying clients and the same discovery as ``serve``."""
    async with new_session(settings) as session:
        sources: list[Source] = []
        for name in settings.polled_providers():
            http = providers.json_client(
                settings, name, session, budget=providers.budget_for(settings, name)
            )
            provider = providers.provider_for(settings, name, http)
            sources.append((provider, providers.discovery_for(settings, name, provider)))
        return await backfill(
            sources,
            handle,
            max_metrics_per_model=settings.limits_max_metrics_per_model,
            progress=progress,
        )
