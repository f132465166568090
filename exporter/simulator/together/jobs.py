"""A job's lifecycle as the API shows it at a given instant: status, job object, events,
checkpoints.

Status runs pending -> queued -> running -> compressing -> uploading -> completed, or stops in
``error``, or goes ``cancel_requested`` -> ``cancelled``. Timestamps are ISO-8601 strings (UTC,
microseconds, ``Z``). Following the SDK's types, the list answer carries truncated jobs (no
``events``, none of the single job's extra fields), a few optional fields are ``null`` and some
are absent until they mean something (``model_output_name`` before running, ``progress``
outside ``running``, the early-stopping fields before the end).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from exporter.simulator.together.plan import JobPlan

PENDING: Final = "pending"
QUEUED: Final = "queued"
RUNNING: Final = "running"
COMPRESSING: Final = "compressing"
UPLOADING: Final = "uploading"
CANCEL_REQUESTED: Final = "cancel_requested"
CANCELLED: Final = "cancelled"
ERROR: Final = "error"
COMPLETED: Final = "completed"
#: Statuses after which nothing changes any more.
TERMINAL: Final = frozenset({COMPLETED, ERROR, CANCELLED})

_SETTINGS_IN_LIST: Final = (
    "model",
    "n_epochs",
    "batch_size",
    "learning_rate",
    "training_type",
    "training_method",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "training_file",
    "token_count",
    "total_price",
    "wandb_project_name",
)
_SETTINGS_IN_FULL: Final = ("param_count", "trainingfile_numlines", "trainingfile_size")


def iso(unix: float) -> str:
    """ISO-8601 in UTC with microseconds and ``Z``, as the API's timestamps are written."""
    moment = dt.datetime.fromtimestamp(unix, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stages(plan: JobPlan) -> list[tuple[float, str]]:
    """When each status begins, in order; the job's status at ``t`` is the last one begun."""
    timeline = [(plan.created_at, PENDING), (plan.queued_at, QUEUED), (plan.running_at, RUNNING)]
    stopped = plan.stopped_at
    if stopped is None:
        timeline += [
            (plan.training_end, COMPRESSING),
            (plan.uploading_at, UPLOADING),
            (plan.completed_at, COMPLETED),
        ]
    elif plan.ending == "error":
        timeline.append((stopped, ERROR))
    else:
        timeline += [(stopped, CANCEL_REQUESTED), (stopped + plan.cancel_seconds, CANCELLED)]
    # A stage of no length (a scripted job is never pending) is skipped.
    return [
        (t, s)
        for i, (t, s) in enumerate(timeline)
        if i + 1 == len(timeline) or t < timeline[i + 1][0]
    ]


def stage_at(plan: JobPlan, now: float) -> tuple[float, str]:
    """The start and name of the stage the job is in at ``now``."""
    timeline = stages(plan)
    current = timeline[0]
    for begun in timeline:
        if begun[0] <= now:
            current = begun
    return current


def job_object(plan: JobPlan, now: float, *, full: bool) -> dict[str, Any]:
    """The job as ``GET /v1/fine-tunes/{id}`` (``full``) or the list (truncated) sends it."""
    started, status = stage_at(plan, now)
    visible = events(plan, now)
    settings = plan.settings
    job: dict[str, Any] = {
        "id": plan.id,
        "status": status,
        "created_at": iso(plan.created_at),
        "updated_at": iso(max(started, visible[-1]["_at"]) if visible else started),
        "started_at": iso(started),
        "user_id": plan.user_id,
        "suffix": plan.suffix,
        "n_evals": plan.total_steps // plan.eval_every if plan.eval_every else 0,
        "n_checkpoints": len(plan.checkpoint_steps),
        "validation_file": None if plan.eval_every is None else f"{settings['training_file']}-val",
        "from_checkpoint": None,
        "from_hf_model": None,
        "lr_scheduler": {
            "lr_scheduler_type": "cosine" if plan.curve.cosine else "linear",
            "lr_scheduler_args": {"min_lr_ratio": plan.curve.min_lr_ratio}
            | ({"num_cycles": 0.5} if plan.curve.cosine else {}),
        },
    }
    job |= {key: settings[key] for key in _SETTINGS_IN_LIST}
    if status not in (PENDING, QUEUED):
        job["model_output_name"] = settings["model_output_name"]
    if status == RUNNING:
        job["progress"] = _progress(plan, now)
    if status in TERMINAL:
        job |= {
            "early_stopped": False,
            "early_stopping_best_metric": None,
            "early_stopping_best_step": None,
        }
    if full:
        job |= {key: settings[key] for key in _SETTINGS_IN_FULL}
        job["eval_steps"] = plan.eval_every or 0
        job["epochs_completed"] = (
            min(_steps_done(plan, now), plan.last_step) // plan.steps_per_epoch
        )
        if status == QUEUED:
            job["queue_depth"] = plan.index % 7
        job["events"] = [_public(e) for e in visible]
    return job


def _steps_done(plan: JobPlan, now: float) -> int:
    """How many training steps have been logged by ``now`` (whether or not logging skipped
    them)."""
    if now < plan.training_start:
        return 0
    done = min(plan.last_step, int((now - plan.training_start) / plan.step_seconds))
    while done > 0 and plan.step_ns(done) / 1e9 > now:
        done -= 1
    return done


def _progress(plan: JobPlan, now: float) -> dict[str, Any]:
    """Time to the next stage: known once training runs, not while setting up."""
    if now < plan.training_start:
        return {"estimate_available": False, "seconds_remaining": 0}
    end = plan.stopped_at if plan.stopped_at is not None else plan.training_end
    return {"estimate_available": True, "seconds_remaining": max(0, round(end - now))}


def events(plan: JobPlan, now: float) -> list[dict[str, Any]]:
    """Events that have happened by ``now``, oldest first (``_at``: Unix time, not sent)."""
    return [e for e in _timeline(plan) if e["_at"] <= now]


def public_events(plan: JobPlan, now: float) -> list[dict[str, Any]]:
    """``events`` as the API sends them."""
    return [_public(e) for e in events(plan, now)]


def _public(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "_at"}


def _event(
    at: float,
    kind: str,
    message: str,
    *,
    level: str = "info",
    step: int | None = None,
    total: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "_at": at,
        "object": "fine-tune-event",
        "created_at": iso(at),
        "type": kind,
        "message": message,
        "level": level,
        "step": step,
        "total_steps": total,
        **extra,
    }


def _timeline(plan: JobPlan) -> list[dict[str, Any]]:
    """Every event the job will ever have (future ones included), in time order."""
    total, model = plan.total_steps, plan.model
    setup = plan.training_start - plan.running_at
    found = [
        _event(plan.created_at, "job_pending", "Fine-tune request created"),
        _event(plan.running_at, "job_start", f"Job started at {iso(plan.running_at)}"),
        _event(plan.running_at + 0.2 * setup, "model_downloading", f"Downloading model {model}"),
        _event(plan.running_at + 0.5 * setup, "model_download_complete", "Model downloaded"),
        _event(plan.running_at + 0.6 * setup, "training_data_downloading", "Downloading data"),
        _event(plan.running_at + 0.8 * setup, "training_data_download_complete", "Data ready"),
        _event(plan.training_start, "training_start", "Training started", step=0, total=total),
    ]
    last = plan.last_step
    for epoch in range(1, total // plan.steps_per_epoch + 1):
        step = epoch * plan.steps_per_epoch
        if step <= last:
            at = plan.step_ns(step) / 1e9
            found.append(
                _event(at, "epoch_complete", f"Epoch {epoch} completed", step=step, total=total)
            )
    for step in plan.checkpoint_steps:
        if step <= last:
            found.append(
                _event(
                    plan.step_ns(step) / 1e9,
                    "checkpoint_save",
                    f"Checkpoint saved at step {step}",
                    step=step,
                    total=total,
                    checkpoint_path=_checkpoint_path(plan, step),
                )
            )
    stopped = plan.stopped_at
    if stopped is None:
        found += [
            _event(
                plan.training_end,
                "training_complete",
                "Training completed",
                step=total,
                total=total,
            ),
            _event(plan.training_end, "model_compressing", "Compressing output model"),
            _event(plan.uploading_at, "model_compression_complete", "Model compressed"),
            _event(plan.uploading_at, "model_uploading", "Uploading output model"),
            _event(plan.completed_at, "model_upload_complete", "Model uploaded"),
            _event(plan.completed_at, "job_complete", f"Job finished at {iso(plan.completed_at)}"),
        ]
    elif plan.ending == "error":
        found.append(_event(stopped, "job_error", "Job failed: CUDA out of memory", level="error"))
    else:
        found += [
            _event(stopped, "cancel_requested", "Cancel requested by user"),
            _event(stopped + plan.cancel_seconds, "job_stopped", "Job cancelled"),
        ]
    found.sort(key=lambda e: float(e["_at"]))
    return found


def _checkpoint_path(plan: JobPlan, step: int) -> str:
    return f"s3://together-ft/{plan.id}/checkpoints/step-{step}"


def checkpoints(plan: JobPlan, now: float) -> list[dict[str, Any]]:
    """Checkpoints saved by ``now``, oldest first; the one at the end of training is "Final"."""
    lora = plan.settings["training_type"]["type"] == "Lora"
    saved = []
    for event in events(plan, now):
        if event["type"] != "checkpoint_save":
            continue
        step = int(event["step"])
        final = step == plan.total_steps
        saved.append(
            {
                "checkpoint_type": "Final" if final else f"Intermediate (step {step})",
                "created_at": event["created_at"],
                "path": _checkpoint_path(plan, step),
                "step": step,
                "checkpoint": "adapter" if lora else "model",
            }
        )
    return saved
