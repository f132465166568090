"""The optional ``--state.file``: where each model's processing stopped, kept across restarts.

Without it the first poll after a start only establishes the position (nothing is counted
twice, but steps that appeared while the exporter was down are not judged). With it the
exporter resumes after the last step it processed, with the spike history it had.
The file is replaced atomically (write, fsync, rename) so a crash never leaves half of it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class ModelState:
    position: int
    order: str = "unknown"
    resume_token: str = ""
    history: dict[str, list[float]] = field(default_factory=dict)
    # Counters continue across a restart, so that increase() sees exactly the steps judged
    # after it and never mistakes the restart for a reset.
    outliers: dict[str, int] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)
    processed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "order": self.order,
            "resume_token": self.resume_token,
            "history": self.history,
            "outliers": self.outliers,
            "nonfinite": self.nonfinite,
            "processed": self.processed,
        }

    @staticmethod
    def from_json(data: Any) -> ModelState:
        if not isinstance(data, dict) or not isinstance(data.get("position"), int):
            raise ValueError("a model entry needs an integer position")
        history = data.get("history", {})
        if not isinstance(history, dict):
            raise ValueError("history must be an object")
        return ModelState(
            position=data["position"],
            order=str(data.get("order", "unknown")),
            resume_token=str(data.get("resume_token", "")),
            history={str(k): [float(v) for v in values] for k, values in history.items()},
            outliers=_counts(data.get("outliers", {})),
            nonfinite=_counts(data.get("nonfinite", {})),
            processed=int(data.get("processed", 0)),
        )


def _counts(data: Any) -> dict[str, int]:
    if not isinstance(data, dict):
        raise ValueError("counts must be an object")
    return {str(k): int(v) for k, v in data.items()}


def load_state(path: Path) -> dict[str, ModelState]:
    """The saved positions; a missing file is a first start, a broken one is logged and ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read the state file", extra={"path": str(path), "error": str(exc)})
        return {}
    try:
        data = json.loads(text)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        return {str(k): ModelState.from_json(v) for k, v in data["models"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning(
            "ignoring an unreadable state file", extra={"path": str(path), "error": str(exc)}
        )
        return {}


def save_state(path: Path, models: dict[str, ModelState]) -> str | None:
    """Replace the file atomically. A failure is returned (for the caller to log once per
    change), never raised into the poll loop."""
    payload = {"version": FORMAT_VERSION, "models": {k: v.to_json() for k, v in models.items()}}
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as handle:
            temporary = handle.name
            json.dump(payload, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None
