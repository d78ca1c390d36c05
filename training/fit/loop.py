"""The fine-tuning loop: optimizer steps, validation + early stopping, checkpoints, exact resume, and optional
weight averaging over the schedule's last part (train.weight_averaging: SWA or EMA, checkpointed with the rest).

Nothing here touches MLflow: metrics go out through the `log` callback (training.tracking.runs provides it).
A caller can also end training early: `should_stop(metrics, step)` runs after each validation and returns a
reason to stop ("" = go on); a hyper-parameter search prunes its trials this way (training.pipeline.search).
A step is one optimizer step over `grad_accum` micro-batches; the last step of an epoch may have fewer.
With `train.source_terms` the loop also owns per-(source, policy) terms that enter the training loss only
(training.fit.source_terms): trained, checkpointed and all-reduced with the model, never in its saved weights;
validation scores the plain logits.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from serving.modeling import ENCODER_LAYER
from serving.policies import POLICIES
from training.config import TrainConfig
from training.fit.batches import Encoded, TeacherTargets, collate, epoch_batches, label_weights, masked_bce
from training.fit.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.fit.device import CPU, Accel
from training.fit.distributed import World
from training.fit.validation import predict_probs, validation_metrics
from training.fit.source_terms import SourceTerms, make_source_terms

BEST_DIR = "best"
LAST_DIR = "last"  # the final weights, whatever validation said (train.keep=last builds the artifact from it)
# BEST_DIR is written only with train.keep=best: the best monitored validation's weights, at each improvement.

LogFn = Callable[[dict[str, float], int], None]
StopFn = Callable[[dict[str, float], int], str]  # (validation metrics, step) -> reason to stop, "" = go on


@dataclass
class Progress:
    """Where training is; saved in every checkpoint, so a resume continues from exactly here."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch: int = 0  # micro-batches of `epoch` already consumed
    examples: int = 0
    elapsed: float = 0.0  # seconds of training across sessions, validation included
    eval_seconds: float = 0.0  # of which validation
    best_metric: float = -math.inf
    best_step: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    stale_evals: int = 0
    losses: list[float] = field(default_factory=list)  # train loss of every step
    evals: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


@dataclass
class Plan:
    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def usable_batches(n_batches: int, cfg: TrainConfig, world: int) -> int:
    """Micro-batches of an epoch that are trained on: a step takes `grad_accum * world` of them, and a last,
    short group that cannot give every rank one is left out (at most world - 1 micro-batches; none at world 1)."""
    tail = n_batches % (cfg.grad_accum * world)
    return n_batches - tail if tail < world else n_batches


def make_plan(n_train: int, cfg: TrainConfig, world: int = 1) -> Plan:
    batches = usable_batches(math.ceil(n_train / cfg.batch_size), cfg, world)
    steps_per_epoch = math.ceil(batches / (cfg.grad_accum * world))
    total = steps_per_epoch * cfg.epochs
    return Plan(batches, steps_per_epoch, min(total, cfg.max_steps) if cfg.max_steps else total)


def layer_depth(name: str, n_layers: int) -> int:
    """How many layers below the head a parameter sits: 0 = head (and pooler), 1 = top encoder layer, ...,
    n_layers = the bottom one, n_layers + 1 = the embeddings."""
    if "embeddings" in name:
        return n_layers + 1
    found = ENCODER_LAYER.search(name)
    return n_layers - int(found.group(1)) if found else 0


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int, terms: SourceTerms | None = None):
    # No weight decay on biases and LayerNorm weights (standard for BERT fine-tuning); with train.layer_lr_decay
    # one pair of groups per depth, each at lr x decay^depth (the schedule scales every group alike).
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", 0) if cfg.layer_lr_decay < 1 else 0
    grouped: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            depth = layer_depth(name, n_layers) if n_layers else 0
            no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
            grouped.setdefault((depth, no_decay), []).append(p)
    if cfg.layer_lr_decay < 1 and not any(0 < depth <= n_layers for depth, _ in grouped):
        raise ValueError(f"train.layer_lr_decay: {type(model).__name__} has no config.num_hidden_layers or names no "
                         "encoder layer like '<prefix>.layer.<i>.': cannot tell the layers apart")
    groups = [{"params": params, "weight_decay": 0.0 if no_decay else cfg.weight_decay,
               "lr": cfg.lr * cfg.layer_lr_decay ** depth} for (depth, no_decay), params in sorted(grouped.items())]
    if terms is not None:  # their own group: own peak lr (same schedule), no weight decay (their L2 is in the loss)
        groups.append({"params": list(terms.parameters()), "weight_decay": 0.0, "lr": cfg.source_terms_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    warmup = int(cfg.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def save_weights(model, run_dir: Path, name: str) -> None:
    """Weights into run_dir/name (save_pretrained), replaced atomically."""
    final, tmp = run_dir / name, run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    old = run_dir / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def make_averaged(model, cfg: TrainConfig):
    """train.weight_averaging's running average of `model` (torch.optim.swa_utils.AveragedModel; buffers are
    copied, not averaged: BERT's are constants), or None when it is off."""
    if cfg.weight_averaging == "none":
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    fn = get_ema_multi_avg_fn(cfg.ema_decay) if cfg.weight_averaging == "ema" else None
    return AveragedModel(model, multi_avg_fn=fn)


class TrainingLoop:
    def __init__(self, model, train: Encoded, val: Encoded, cfg: TrainConfig, run_dir: Path, *,
                 pad_id: int, pos_weight: list[float], log: LogFn, progress_bar: bool = True,
                 world: World | None = None, flush: Callable[[], None] = lambda: None,
                 should_stop: StopFn | None = None, accel: Accel = CPU, teacher: TeacherTargets | None = None,
                 init_terms: dict[str, Any] | None = None):
        """`init_terms`: saved source terms to start from (train.init_from, training.fit.init_from); the model comes
        with its weights already loaded. Rank 0's model and terms are every rank's (`World.sync_parameters`)."""
        self.model, self.train_data, self.val, self.cfg = model, train, val, cfg
        if teacher is not None and teacher.logits.shape != (len(train), len(POLICIES)):
            raise ValueError(f"teacher logits {teacher.logits.shape} do not match the {len(train)} train rows")
        self.teacher = teacher  # distillation: the loss also pulls toward these logits (training.fit.distill)
        self.accel = accel  # device and precision (training.fit.device); CPU fp32 unless configured
        model.to(accel.device)
        self.run_dir, self.pad_id, self.log, self.flush = Path(run_dir), pad_id, log, flush
        self.should_stop, self._stop_request = should_stop, ""
        self.world = world or World()
        self.progress_bar = progress_bar and self.world.main
        # Loss-only source terms (None for train.source_terms=none); each train row's source index, once.
        self.terms = make_source_terms(cfg, train.sources, train.labels, list(POLICIES))
        # Which sources' terms came from `init_terms` ({"loaded", "new", "unused"}; None: started at the identity).
        self.terms_init = None if self.terms is None or init_terms is None else self.terms.load_saved(init_terms)
        if self.terms is not None:
            self.terms.to(accel.device)
        self.source_ids = None if self.terms is None else self.terms.index_of(train.sources)
        self.modules = [model] if self.terms is None else [model, self.terms]  # what is trained and all-reduced
        self.world.sync_parameters(self.modules)
        self.pos_weight = torch.tensor(pos_weight, dtype=torch.float32, device=accel.device)
        self.label_weights = label_weights(train, cfg.label_weights)  # [N, P] or None (train.label_weights)
        self.lengths = np.array([len(x) for x in train.input_ids])
        self.plan = make_plan(len(train), cfg, self.world.size)
        self.optimizer, self.scheduler = make_optimizer(model, cfg, self.plan.total_steps, self.terms)
        self.scaler = accel.scaler()  # fp16 on CUDA only
        self.p = Progress()
        # train.weight_averaging: a running average of the weights over the schedule's last part (None: off).
        self.averaged = make_averaged(model, cfg)
        self.average_from = math.floor(cfg.averaging_start * self.plan.total_steps)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint(self, extra: dict[str, Any]) -> None:
        """Rank 0 writes model, optimizer, scheduler, progress and every rank's RNG state (a collective)."""
        rngs = self.world.gather(rng_state())
        if self.world.main:
            self.flush()  # the metrics of every step up to the checkpoint are in the store before it exists
            save_checkpoint(self.run_dir, self.p.step, {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "progress": asdict(self.p), "rng": rngs, **extra,
                **({} if self.terms is None else {"source_terms": self.terms.checkpoint_state()}),
                **({} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()}),
                **({} if self.averaged is None else {"averaged": self.averaged.state_dict()}),
            })

    def resume(self) -> dict[str, Any] | None:
        """Restore the newest checkpoint, if any (rank 0 reads it, every rank gets it); returns it (callers read
        their extra keys)."""
        path = latest_checkpoint(self.run_dir) if self.world.main else None
        state = self.world.broadcast(load_checkpoint(path) if path else None)
        if state is None:
            return None
        if len(state["rng"]) != self.world.size:
            raise ValueError(f"{self.run_dir}: the checkpoint was written by {len(state['rng'])} training "
                             f"process(es); resume it with the same number (now {self.world.size})")
        self.model.load_state_dict(state["model"])
        if self.terms is not None:
            self.terms.load_checkpoint_state(state.get("source_terms"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.averaged is not None:
            if "averaged" not in state:
                raise ValueError(f"{self.run_dir}: the checkpoint has no averaged weights; resume with "
                                 f"train.weight_averaging={self.cfg.weight_averaging} only a run started with it")
            self.averaged.load_state_dict(state["averaged"])
        self.p = Progress(**state["progress"])
        set_rng_state(state["rng"][self.world.rank])
        return state

    # -- validation ----------------------------------------------------------------------------------------
    @property
    def averaging(self) -> bool:
        """Whether the averaged weights are the model now (train.weight_averaging, past averaging_start)."""
        return self.averaged is not None and int(self.averaged.n_averaged) > 0

    @property
    def current_model(self):
        """The weights validation scores and `last/` holds: the running average once it has started."""
        return self.averaged.module if self.averaging else self.model

    def kept(self) -> tuple[str, int, dict[str, float]]:
        """train.keep: the weights the artifact is built from, as (folder in the run dir, step, their validation
        metrics): `best/`, the best monitored validation's, or `last/`, the final weights (with weight averaging:
        the average), which the loop always validates."""
        if self.cfg.keep == "last":
            last = self.p.evals[-1]
            return LAST_DIR, last["step"], {k: v for k, v in last.items()
                                            if k not in ("step", "epoch", "averaged_steps")}
        return BEST_DIR, self.p.best_step, self.p.best_metrics

    def validate(self) -> dict[str, float]:
        t0 = time.monotonic()
        probs = predict_probs(self.current_model, self.val, self.cfg.eval_batch_size, self.pad_id, self.accel)
        metrics = validation_metrics(self.val.labels, probs)
        if self.cfg.metric not in metrics:
            raise KeyError(f"train.metric={self.cfg.metric!r} is not a validation metric; have {sorted(metrics)}")
        value = metrics[self.cfg.metric]
        improved = value > self.p.best_metric
        if improved:
            self.p.best_metric, self.p.best_step, self.p.best_metrics = value, self.p.step, metrics
            self.p.stale_evals = 0
            if self.cfg.keep == "best":  # the artifact is built from them (train.keep=last: from `last/`)
                save_weights(self.current_model, self.run_dir, BEST_DIR)
                if self.terms is not None:  # the terms of those weights (what train.init_from starts from)
                    self.terms.write_best(self.run_dir, self.p.step)
        else:
            self.p.stale_evals += 1
        self.p.evals.append({"step": self.p.step, "epoch": self.p.epoch, **metrics,
                             **({"averaged_steps": int(self.averaged.n_averaged)} if self.averaging else {})})
        self.log({f"val_{k}": v for k, v in metrics.items()}, self.p.step)
        self.p.eval_seconds += time.monotonic() - t0
        return metrics

    # -- training ------------------------------------------------------------------------------------------
    def _micro_step(self, idx: np.ndarray, n_micro: int) -> float:
        batch = self.accel.to(collate(self.train_data, idx, self.pad_id, self.source_ids,
                                      None if self.teacher is None else self.teacher.logits))
        labels = batch.pop("labels")
        source_ids = batch.pop("source_ids", None)  # [B]; only with source terms, never given to the model
        teacher_logits = batch.pop("teacher_logits", None)  # [B, P]; only when distilling
        with self.accel.autocast():
            plain = logits = self.model(**batch).logits  # [B, P]
            if self.terms is not None:
                logits = self.terms(logits, source_ids)  # the loss's view of this row's source
        weights = None if self.label_weights is None else torch.from_numpy(self.label_weights[idx]).to(
            self.accel.device)  # [B, P]
        loss = masked_bce(logits, labels, self.pos_weight, weights)
        if self.teacher is not None:  # the teacher's logits are plain (served) logits: compared with ours, no terms
            loss = self.teacher.loss(plain, teacher_logits, loss)
        # The terms' L2 once per step (1/n_micro of it per micro-batch); the logged train loss is the BCE alone
        # (with the teacher term when distilling).
        objective = (loss if self.terms is None else loss + self.terms.penalty()) / n_micro
        (objective if self.scaler is None else self.scaler.scale(objective)).backward()
        return loss.item() / n_micro

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]

    def _stop_reason(self, started: float) -> str:
        cfg = self.cfg
        if self.p.step >= self.plan.total_steps:
            return "max_steps" if cfg.max_steps and self.p.step >= cfg.max_steps else "epochs"
        if self._stop_request:
            return self._stop_request
        if cfg.early_stopping_patience and self.p.stale_evals >= cfg.early_stopping_patience:
            return f"early stopping: {cfg.metric} did not improve in {cfg.early_stopping_patience} validations"
        if cfg.max_minutes and self.p.elapsed + time.monotonic() - started >= cfg.max_minutes * 60:
            return f"time budget train.max_minutes={cfg.max_minutes}"
        return ""

    def fit(self, checkpoint_extra: dict[str, Any] | None = None) -> Progress:
        cfg, p, plan = self.cfg, self.p, self.plan
        started = time.monotonic()
        self.model.train()
        bar = tqdm(total=plan.total_steps, initial=p.step, desc="train", unit="step", disable=not self.progress_bar,
                   dynamic_ncols=True)
        window: list[tuple[float, int]] = []  # (time, examples) for a recent-throughput estimate
        w = self.world
        while not p.stop_reason:
            batches = epoch_batches(self.lengths, seed=cfg.seed, epoch=p.epoch, batch_size=cfg.batch_size,
                                    group=cfg.length_group, alpha=cfg.source_balance, sources=self.train_data.sources)
            n_batches = usable_batches(len(batches), cfg, w.size)
            while p.batch < n_batches and not p.stop_reason:
                # One step: grad_accum micro-batches per rank, rank r taking every world-th of the group.
                chunk = batches[p.batch:min(p.batch + cfg.grad_accum * w.size, n_batches)]
                mine = chunk[w.rank::w.size]
                loss = w.average_gradients(self.modules, sum(self._micro_step(idx, len(mine)) for idx in mine))
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(self._parameters(), cfg.max_grad_norm)
                if self.scaler is None:
                    self.optimizer.step()
                else:  # skips the step when fp16 gradients overflowed, and adapts the scale
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                p.batch += len(chunk)
                p.step += 1
                if self.averaged is not None and p.step > self.average_from:
                    self.averaged.update_parameters(self.model)
                p.examples += sum(len(idx) for idx in chunk)
                p.losses.append(loss)
                now = time.monotonic()
                window = [w for w in window if now - w[0] < 30] + [(now, p.examples)]
                rate = (window[-1][1] - window[0][1]) / max(window[-1][0] - window[0][0], 1e-9)
                bar.update(1)
                bar.set_postfix(epoch=p.epoch, loss=f"{loss:.4f}", ex_s=f"{rate:.0f}" if len(window) > 1 else "-")
                if p.step % cfg.log_every_steps == 0:
                    self.log({"train_loss": loss, "lr": self.scheduler.get_last_lr()[0], "epoch": p.epoch}, p.step)
                epoch_end = p.batch >= n_batches
                if w.main and (epoch_end or (cfg.eval_every_steps and p.step % cfg.eval_every_steps == 0)):
                    self._validate_logged(bar)
                    self.model.train()
                p.stop_reason = w.broadcast(self._stop_reason(started) if w.main else "")  # rank 0 decides
                if epoch_end:
                    p.epoch, p.batch = p.epoch + 1, 0
                if p.step % cfg.checkpoint_every_steps == 0 and not p.stop_reason:
                    p.elapsed += time.monotonic() - started
                    started = time.monotonic()
                    self.checkpoint(checkpoint_extra or {})
        if w.main and (not p.evals or p.evals[-1]["step"] != p.step):  # stopped mid-epoch: the last weights too
            self._validate_logged(bar)
        bar.close()
        if w.main:
            save_weights(self.current_model, self.run_dir, LAST_DIR)
            if self.terms is not None:
                self.terms.write_report(self.run_dir)  # logged by training.fit.command; never in the weights
                if self.cfg.keep == "last":  # the kept weights' exact terms (what train.init_from reads)
                    self.terms.write_best(self.run_dir, self.p.step)
        p.elapsed += time.monotonic() - started
        return p

    def _validate_logged(self, bar) -> None:
        metrics = self.validate()
        bar.write(f"step {self.p.step} epoch {self.p.epoch}: {self.cfg.metric}={metrics[self.cfg.metric]:.4f}"
                  f" (best {self.p.best_metric:.4f} at step {self.p.best_step})")
        if self.should_stop is not None:
            self._stop_request = self.should_stop(metrics, self.p.step)
