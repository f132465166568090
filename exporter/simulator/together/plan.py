"""Everything about one simulated Together AI fine-tuning job that does not depend on the clock.

A plan is a pure function of ``(seed, job index)`` (or of a scripted model): settings, the
stage timeline, the training curve's shape and which of the API's unconfirmed forms the job
uses. Times of logged steps are integer nanoseconds, because the metrics endpoint reports them
as integer nanoseconds (beyond what a float can hold) and the simulator must be exact.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from exporter.simulator.cohere.plan import DOMAINS
from exporter.simulator.scenario import ScriptedModel, scripted_rng

EvalForm = Literal["global_step", "none"]
NanForm = Literal["string", "omit"]
Ending = Literal["completed", "error", "cancelled"]

NANOS: Final = 1_000_000_000
_ERROR_RATE: Final = 1 / 8
_CANCEL_RATE: Final = 1 / 12
_NO_TIMESTAMP_RATE: Final = 1 / 5

#: Base models and their parameter counts.
_BASE_MODELS: Final = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": 8_030_261_248,
    "meta-llama/Llama-3.3-70B-Instruct-Reference": 70_553_706_496,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "Qwen/Qwen3-14B-Base": 14_768_307_200,
    "mistralai/Mistral-7B-Instruct-v0.2": 7_241_732_096,
    "google/gemma-3-12b-it": 12_187_325_040,
}
_KINDS: Final = ("chat", "assistant", "router", "summarizer", "extractor")


def to_ns(unix: float) -> int:
    """Float Unix seconds as integer nanoseconds, splitting off the whole seconds first so the
    fraction is not rounded at the 2**53 boundary."""
    whole = math.floor(unix)
    return whole * NANOS + round((unix - whole) * NANOS)


@dataclass(frozen=True)
class Curve:
    """The shape of a job's training curve and schedule."""

    loss_start: float
    loss_end: float
    rate: float
    eval_gap: float  # eval loss over training loss
    warmup_steps: int
    min_lr_ratio: float
    cosine: bool


@dataclass(frozen=True)
class JobPlan:
    """Everything about one job that does not depend on the clock (times in Unix seconds,
    logged steps in integer nanoseconds)."""

    index: int
    id: str
    user_id: str
    suffix: str
    settings: Mapping[str, Any]
    created_at: float
    queued_at: float
    running_at: float
    training_start: float
    step_seconds: float
    total_steps: int
    steps_per_epoch: int
    logging_steps: int
    eval_every: int | None
    eval_seconds: float
    checkpoint_steps: tuple[int, ...]
    compress_seconds: float
    upload_seconds: float
    ending: Ending
    stop_step: int | None  # error or cancel: the first step never logged
    cancel_seconds: float
    eval_form: EvalForm
    nan_form: NanForm
    timestamps: bool
    perplexity: bool
    curve: Curve
    script: ScriptedModel | None = None

    @property
    def model(self) -> str:
        return str(self.settings["model"])

    @property
    def training_start_ns(self) -> int:
        return to_ns(self.training_start)

    def step_ns(self, step: int) -> int:
        """When training step ``step`` is logged (an eval pauses training: later steps wait)."""
        evals_before = (step - 1) // self.eval_every if self.eval_every else 0
        jitter = 0 if self.script is not None else _jitter_ns(self.id, step, self.step_seconds)
        return (
            self.training_start_ns
            + round(step * self.step_seconds * NANOS)
            + evals_before * round(self.eval_seconds * NANOS)
            + jitter
        )

    def eval_ns(self, step: int) -> int:
        """When the evaluation at ``step`` is logged: right after that step's training entry."""
        return self.step_ns(step) + round(self.eval_seconds * NANOS)

    def is_logged(self, step: int) -> bool:
        return step % self.logging_steps == 0 or step == self.total_steps

    def is_eval(self, step: int) -> bool:
        return self.eval_every is not None and step % self.eval_every == 0

    @property
    def last_step(self) -> int:
        """The last step ever logged."""
        return self.total_steps if self.stop_step is None else self.stop_step - 1

    @property
    def stopped_at(self) -> float | None:
        """When an error or a cancel request stops training (``None``: it runs to the end)."""
        if self.stop_step is None:
            return None
        return self.step_ns(self.stop_step) / NANOS

    @property
    def training_end(self) -> float:
        """After the last training step (and its evaluation); scripted jobs end exactly on it."""
        last = self.step_ns(self.total_steps)
        if self.is_eval(self.total_steps):
            last += round(self.eval_seconds * NANOS)
        return last / NANOS + (0.0 if self.script is not None else 1.0)

    @property
    def uploading_at(self) -> float:
        return self.training_end + self.compress_seconds

    @property
    def completed_at(self) -> float:
        return self.uploading_at + self.upload_seconds


def _jitter_ns(job_id: str, step: int, step_seconds: float) -> int:
    """A deterministic delay below a third of a step: log times are not on a grid."""
    return random.Random(f"{job_id}:{step}").randrange(max(1, int(step_seconds * NANOS / 3)))


def job_id_from(rng: random.Random) -> str:
    """``ft-`` and a version-4 UUID drawn from ``rng`` (one 128-bit draw)."""
    return "ft-" + str(uuid.UUID(int=rng.getrandbits(128), version=4))


def derive_id(seed: int, index: int) -> str:
    """The id of job ``index``: the first draw of its stream, for random and scripted alike."""
    return job_id_from(random.Random(f"together:{seed}:{index}"))


def _settings(rng: random.Random, suffix: str, account: str, epochs: int) -> dict[str, Any]:
    """The job's configuration fields, as the API reports them."""
    model = rng.choice(sorted(_BASE_MODELS))
    lora = rng.random() < 0.7
    rank = rng.choice((8, 16, 32, 64))
    training_type: dict[str, Any] = (
        {"type": "Lora", "lora_r": rank, "lora_alpha": rank * rng.choice((1, 2))}
        | {"lora_dropout": rng.choice((0.0, 0.05)), "lora_trainable_modules": "all-linear"}
        if lora
        else {"type": "Full"}
    )
    dpo = rng.random() < 0.2
    lines = rng.randint(2_000, 60_000)
    tokens = lines * rng.randint(300, 1_200)
    return {
        "model": model,
        "model_output_name": f"{account}/{model.split('/')[-1]}-{suffix}-{rng.getrandbits(32):08x}",
        "n_epochs": epochs,
        "batch_size": rng.choice((8, 16, 32)),
        "learning_rate": rng.choice((1e-5, 2e-5, 1e-4, 2e-4)) * (10 if lora else 1),
        "training_type": training_type,
        "training_method": {"method": "dpo", "dpo_beta": 0.1}
        if dpo
        else {"method": "sft", "train_on_inputs": "auto"},
        "warmup_ratio": rng.choice((0.0, 0.03, 0.1)),
        "weight_decay": rng.choice((0.0, 0.01)),
        "max_grad_norm": 1.0,
        "training_file": f"file-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
        "trainingfile_numlines": lines,
        "trainingfile_size": lines * rng.randint(900, 4_000),
        "token_count": tokens,
        "total_price": tokens * epochs // 1_000 * rng.choice((3, 5, 8)),
        "param_count": _BASE_MODELS[model],
        "wandb_project_name": f"{suffix}-tuning" if rng.random() < 0.3 else None,
    }


def _curve(rng: random.Random, total: int, settings: Mapping[str, Any]) -> Curve:
    return Curve(
        loss_start=rng.uniform(1.8, 3.2),
        loss_end=rng.uniform(0.25, 0.9),
        rate=rng.uniform(3.0, 6.0),
        eval_gap=rng.uniform(1.03, 1.15),
        warmup_steps=round(float(settings["warmup_ratio"]) * total),
        min_lr_ratio=rng.choice((0.0, 0.1)),
        cosine=rng.random() < 0.5,
    )


def random_plan(
    seed: int, index: int, account: str, users: tuple[str, ...], start: float, added: float | None
) -> JobPlan:
    """A random job; ``added`` is when ``add_job`` created it (``None``: at start-up)."""
    rng = random.Random(f"together:{seed}:{index}")
    job_id = job_id_from(rng)  # first draw: the id other code may derive independently
    suffix = f"{rng.choice(DOMAINS)}-{rng.choice(_KINDS)}-v{rng.randint(1, 9)}"
    epochs = rng.randint(1, 3)
    per_epoch = rng.randint(200, 1_200)
    total = per_epoch * epochs
    logging_steps = rng.choice((1, 1, 1, 5, 10))
    n_evals = rng.choice((0, 4, 5, 10, 10, 20))
    eval_every = None
    if n_evals:  # a multiple of logging_steps, so a training entry is logged at each eval step
        eval_every = max(logging_steps, total // n_evals // logging_steps * logging_steps)
    step_s = rng.uniform(0.6, 1.6)
    pending_s, queued_s, setup_s = rng.uniform(1, 8), rng.uniform(5, 60), rng.uniform(10, 40)
    compress_s, upload_s = rng.uniform(20, 60), rng.uniform(20, 90)
    eval_s = rng.uniform(4, 15)
    ending_draw = rng.random()
    stop_step = rng.randint(max(2, total // 10), total * 9 // 10)
    settings = _settings(rng, suffix, account, epochs)
    duration = pending_s + queued_s + setup_s + total * (step_s + eval_s / (eval_every or total))
    duration += compress_s + upload_s
    if added is not None:
        created = added
    elif index == 0:  # training, with a few dozen steps logged: a demo has data at once
        created = start - pending_s - queued_s - setup_s - rng.uniform(30, 60) * step_s
    elif index == 1:  # completed
        created = start - duration - rng.uniform(600, 5_400)
    elif index == 2:  # mid-run
        created = start - pending_s - queued_s - setup_s - total * step_s * rng.uniform(0.3, 0.7)
    elif index == 3:  # queued
        created = start - pending_s - rng.uniform(0, queued_s / 2)
    elif index == 4:  # pending, about to be queued
        created = start - rng.uniform(0, pending_s / 2)
    else:
        created = start - rng.uniform(0, 1.5 * duration)
    ending: Ending = "completed"
    if added is not None or index >= 3:
        if ending_draw < _ERROR_RATE:
            ending = "error"
        elif ending_draw < _ERROR_RATE + _CANCEL_RATE:
            ending = "cancelled"
    running = created + pending_s + queued_s
    return JobPlan(
        index=index,
        id=job_id,
        user_id=rng.choice(users),
        suffix=suffix,
        settings=settings,
        created_at=created,
        queued_at=created + pending_s,
        running_at=running,
        training_start=running + setup_s,
        step_seconds=step_s,
        total_steps=total,
        steps_per_epoch=per_epoch,
        logging_steps=logging_steps,
        eval_every=eval_every,
        eval_seconds=eval_s if eval_every else 0.0,
        checkpoint_steps=_checkpoints(total, rng.randint(1, 3)),
        compress_seconds=compress_s,
        upload_seconds=upload_s,
        ending=ending,
        stop_step=None if ending == "completed" else stop_step,
        cancel_seconds=rng.uniform(5, 20),
        eval_form=rng.choice(("global_step", "none")),
        nan_form=rng.choice(("string", "omit")),
        timestamps=rng.random() >= _NO_TIMESTAMP_RATE,
        perplexity=rng.random() < 0.5,
        curve=_curve(rng, total, settings),
    )


def scripted_plan(
    seed: int,
    index: int,
    account: str,
    users: tuple[str, ...],
    start: float,
    script: ScriptedModel,
) -> JobPlan:
    """A scenario job: id, owner and settings as for a random job, timings and values scripted.

    ``eval_every`` is "an eval entry every N steps", ``step_seconds`` the seconds per training
    step, every step is logged, the job is queued for ``queue_seconds`` and compresses and
    uploads for half of ``deploy_seconds`` each; ``fail_at_step`` ends it in error there.
    """
    rng = random.Random(f"together:{seed}:{index}")
    job_id = job_id_from(rng)  # the same derivation as random jobs
    users_choice = rng.choice(users)
    settings = _settings(rng, script.name, account, 1)
    shape = scripted_rng(script, "together:shape")
    created = start + script.starts_at
    training = created + script.queue_seconds
    return JobPlan(
        index=index,
        id=job_id,
        user_id=users_choice,
        suffix=script.name,
        settings=settings,
        created_at=created,
        queued_at=created,
        running_at=training,
        training_start=training,
        step_seconds=script.step_seconds,
        total_steps=script.total_steps,
        steps_per_epoch=script.total_steps,
        logging_steps=1,
        eval_every=script.eval_every,
        eval_seconds=0.0,
        checkpoint_steps=(script.total_steps,),
        compress_seconds=script.deploy_seconds / 2,
        upload_seconds=script.deploy_seconds / 2,
        ending="completed" if script.fail_at_step is None else "error",
        stop_step=script.fail_at_step,
        cancel_seconds=0.0,
        eval_form=shape.choice(("global_step", "none")),
        nan_form=shape.choice(("string", "omit")),
        timestamps=True,
        perplexity=False,
        curve=_curve(shape, script.total_steps, settings),
        script=script,
    )


def _checkpoints(total: int, count: int) -> tuple[int, ...]:
    """Steps with a saved checkpoint: evenly spaced, the last one at the end of training."""
    return tuple(total * k // count for k in range(1, count + 1))
