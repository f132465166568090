"""The optional ``--state.file``: where each run's processing stopped, kept across restarts.

Without it the first poll after a start only establishes the position (nothing is counted
twice, but steps that appeared while the exporter was down are not judged). With it the
exporter resumes after the last step it processed, with the spike history it had.
The file is replaced atomically (write, fsync, rename) so a crash never leaves half of it,
and it is read through pydantic models: a file that is not what this exporter wrote is
ignored with one warning, never half-applied.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from exporter.core.problems import ProblemLog

log = logging.getLogger(__name__)
FORMAT_VERSION = 2
MAX_STATE_BYTES = 256 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SavedRun(_Strict):
    """One run's reading position, spike window and counts."""

    position: int
    judged: list[str] = Field(default_factory=list)  # metrics of that step judged so far
    cursor: dict[str, str] = Field(default_factory=dict)
    history: dict[str, list[float]] = Field(default_factory=dict)
    # Counters continue across a restart, so that increase() sees exactly the steps judged
    # after it and never mistakes the restart for a reset.
    outliers: dict[str, int] = Field(default_factory=dict)
    nonfinite: dict[str, int] = Field(default_factory=dict)
    processed: int = 0


class StateFile(_Strict):
    """Version 2: runs by provider, then by run ID."""

    version: Literal[2]
    providers: dict[str, dict[str, SavedRun]]


class _SavedModelV1(_Strict):
    position: int
    order: str = "unknown"
    resume_token: str = ""
    history: dict[str, list[float]] = Field(default_factory=dict)
    outliers: dict[str, int] = Field(default_factory=dict)
    nonfinite: dict[str, int] = Field(default_factory=dict)
    processed: int = 0


class _StateFileV1(_Strict):
    """Version 1, written before there was more than one provider: Cohere models only."""

    version: Literal[1]
    models: dict[str, _SavedModelV1]

    def upgraded(self) -> StateFile:
        runs = {
            model_id: SavedRun(
                position=saved.position,
                cursor={"order": saved.order, "resume_token": saved.resume_token},
                history=saved.history,
                outliers=saved.outliers,
                nonfinite=saved.nonfinite,
                processed=saved.processed,
            )
            for model_id, saved in self.models.items()
        }
        return StateFile(version=2, providers={"cohere": runs})


_ANY_VERSION: TypeAdapter[StateFile | _StateFileV1] = TypeAdapter(
    Annotated[StateFile | _StateFileV1, Field(discriminator="version")]
)


def load_state(path: Path) -> dict[str, dict[str, SavedRun]]:
    """The saved runs by provider; a missing file is a first start, a broken one is logged and
    ignored."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise OSError(f"larger than {MAX_STATE_BYTES} bytes")
        text = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read the state file", extra={"path": str(path), "error": str(exc)})
        return {}
    try:
        state = _ANY_VERSION.validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        log.warning(
            "ignoring an unreadable state file",
            extra={"path": str(path), "error": f"{where}: {first['msg']}"},
        )
        return {}
    upgraded = state.upgraded() if isinstance(state, _StateFileV1) else state
    return upgraded.providers


def save_state(path: Path, providers: dict[str, dict[str, SavedRun]]) -> str | None:
    """Replace the file atomically. A failure is returned (for the caller to log once per
    change), never raised into the poll loop."""
    payload = StateFile(version=FORMAT_VERSION, providers=providers).model_dump_json()
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = handle.name
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


class StateStore:
    """The state file shared by every provider's poller: each saves its part, the file holds
    all of them. A write failure is logged once per change, never raised into the poll loop."""

    def __init__(self, path: Path, problems: ProblemLog) -> None:
        self.path = path
        self.loaded = load_state(path)
        self._providers = {name: dict(runs) for name, runs in self.loaded.items()}
        self._problems = problems

    def save(self, provider: str, runs: dict[str, SavedRun]) -> None:
        self._providers[provider] = runs
        self._problems.report(
            ("state-file",),
            save_state(self.path, self._providers),
            failed="cannot write the state file",
            recovered="the state file is written again",
            path=str(self.path),
        )
