"""The fine-tuning run of `tweetguard train` and `tweetguard distill` (orchestrated by training.pipeline): setup ->
data -> model -> the training loop inside an MLflow run, then the trained run is handed to the `finish` the command
gives (training.registry.finish: artifact, calibration, registration), or, for a search trial, only its history is
logged (`finish_trial`). This module never registers anything itself.

The data source is one call (`load_data`), the model one call (`serving.modeling.build_model`), MLflow one
module (`training.tracking.runs`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import Config, ConfigError, mapping_fields, repo_root, to_flat
from training.data.prepare import prepare
from training.fit.augment import augment_train
from training.fit.obfuscate import obfuscate_train
from training.fit.batches import encode, mask_uncertain_negatives, pos_weights, sample_rows
from training.fit.checkpoint import latest_checkpoint, seed_everything
from training.fit.device import CPU, Accel
from training.fit.init_from import InitFrom
from training.fit.loop import StopFn, TrainingLoop
from training.fit.source_terms import BEST_SOURCE_TERMS_FILE, SOURCE_TERMS_FILE
from training.tracking.runs import Run, TrackingLost, check_reachable, git_commit, resolve_uri

if TYPE_CHECKING:
    from training.fit.distill import Distiller

ARTIFACT_DIR = "model"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
# Keys that may change on --resume without changing what is computed (and the `search` section, which only
# `tweetguard tune` reads: a rerun of the search may resume its winner's run with, say, more trials; and the
# `monitor` section, which training never reads).
RESUMABLE_CHANGES = {"train.max_minutes", "train.system_metrics", "tracking.uri"}


@dataclass
class TrainResult:
    artifact_dir: Path | None  # None for a run trained with register=False (a search trial): no artifact
    run_id: str
    model_version: str | None
    metrics: dict[str, float]  # validation metrics of the kept weights (train.keep)
    steps: int
    stop_reason: str
    examples_per_s: float
    minutes: float

    def summary(self, metric: str) -> str:
        from serving.policies import POLICIES

        per_policy = " ".join(f"{p}/pr_auc={self.metrics[f'{p}/pr_auc']:.3f}" for p in POLICIES
                              if f"{p}/pr_auc" in self.metrics)
        version = f" registered version {self.model_version}" if self.model_version else ""
        done = (f"trained {self.steps} steps in {self.minutes:.1f} min ({self.examples_per_s:.1f} ex/s, stopped: "
                f"{self.stop_reason})" if self.steps else f"fitted in {self.minutes:.1f} min")
        artifact = f" | artifact {self.artifact_dir}" if self.artifact_dir else ""
        return (f"{done}{artifact} | MLflow run {self.run_id}{version} | kept "
                f"weights' validation {metric}={self.metrics.get(metric, float('nan')):.4f} {per_policy}")


@dataclass
class Trained:
    """A fine-tuning run at its end, on rank 0, its MLflow run still open: what a `finish` needs."""

    cfg: Config
    run: Run
    run_dir: Path
    prepared: Any  # training.data.prepare.Prepared
    tokenizer: Any
    loop: TrainingLoop  # its `p` (progress): best metrics and step, history, timing
    uri: str


# What the command does with a trained run (training.registry.finish.finish_training, with where to register).
FinishFn = Callable[[Trained], TrainResult]


def load_data(cfg: Config, progress: bool = True):
    """The one data call; swap here to train on something else (must return a training.data.prepare.Prepared)."""
    return prepare(cfg.data, progress=progress)


def run_dir_for(cfg: Config, resume: bool, kind: str = "train") -> Path:
    """`kind` (train, distill) prefixes a generated run name; a --resume without run_name takes the newest run of
    that kind that has a checkpoint (a distillation never resumes a training run, nor the other way round)."""
    out = Path(cfg.train.output_dir)
    if cfg.run_name:
        run_dir = out / cfg.run_name
    elif resume:  # no name given: the newest run that has a checkpoint
        candidates = sorted((p for p in out.glob(f"{kind}-*/checkpoints/latest")), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--resume: no checkpoint under {out}/{kind}-*/checkpoints (train.output_dir)")
        run_dir = candidates[-1].parents[1]
    else:
        run_dir = out / datetime.now(timezone.utc).strftime(f"{kind}-%Y%m%d-%H%M%S")
    if not resume and (run_dir / "checkpoints").exists():
        raise FileExistsError(f"{run_dir} already has checkpoints: pass --resume to continue it, or set run_name")
    return run_dir


def check_resume_config(run_dir: Path, cfg: Config) -> None:
    saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    now = to_flat(cfg)
    # A key this code added since the run started is unchanged while it keeps its default (the run used that).
    # Keys inside a mapping field (train.label_weights.<source>.<policy>) are never filled: an empty mapping
    # flattens to no keys at all, so a missing one says the run had none, not that it predates the field.
    mappings = tuple(f"{p}." for p in mapping_fields(Config()))
    defaults = {k: v for k, v in to_flat(Config()).items() if k not in saved and not k.startswith(mappings)}
    saved = {**defaults, **saved}
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)
                     and k not in RESUMABLE_CHANGES and not k.startswith(("search.", "monitor.")))
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume of {run_dir}: config differs from the checkpointed run ({diff})")


def setup(cfg: Config, rank: int = 0) -> None:
    import torch

    from serving.fastpath import native_bf16

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.train.bf16 and native_bf16() is False:
        # Measured on a 2-core AVX2 EPYC: bf16 matmul 0.3 GFLOP/s vs 30 fp32, a training step ~8x slower.
        print("WARNING train.bf16=true: this CPU has no AMX / AVX512-BF16 units, bf16 autocast will be far "
              "slower than fp32; set train.bf16=false", file=sys.stderr)
    seed_everything(cfg.train.seed + rank)  # ranks draw their own dropout masks; weights come from rank 0


def fit_transformer(cfg: Config, world, config_file: str | None, resume: bool, progress_bar: bool, *,
                    accel: Accel = CPU, finish: FinishFn | None = None, parent_run_id: str | None = None,
                    should_stop: StopFn | None = None, distiller: Distiller | None = None) -> TrainResult:
    """Fine-tune (every rank of `world` calls this and gets the same result; rank 0 tracks), then `finish(Trained)`
    on rank 0 inside the run. `finish` None (a search trial, training.pipeline.search): the run keeps its metrics and
    history only (no model artifact, calibration, logged model or registry version). `parent_run_id` nests the MLflow
    run under that run; `should_stop(metrics, step)` may end training after a validation (training.fit.loop).
    `distiller` (training.fit.distill): the model is a student made from the teacher and the loss also pulls toward
    the teacher's logits. `train.init_from` (training.fit.init_from): the model and its source terms start from that
    trained model, checked and resolved here before any data is loaded; a resumed run takes its checkpoint instead."""
    if distiller is not None and cfg.train.init_from:
        raise ConfigError(f"train.init_from={cfg.train.init_from}: a distilled student starts from its teacher "
                          "(distill.teacher); leave train.init_from null")
    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)  # before any data or model is loaded
    run_dir, resume = world.on_main(prepare_run_dir, cfg, resume, "train" if distiller is None else "distill")
    init = world.on_main(InitFrom.resolve, cfg, uri) if cfg.train.init_from and not resume else None
    setup(cfg, rank=world.rank)

    from transformers import AutoTokenizer

    from serving.backbone import resolve_backbone
    from serving.modeling import build_model

    prepared = load_data(cfg) if world.main else None
    world.barrier()  # rank 0 has built the data cache; the other ranks read it
    prepared = prepared or load_data(cfg, progress=False)
    if distiller is None:
        backbone = resolve_backbone(cfg.model.backbone)
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        model = build_model(backbone, cfg.model.head)
        if init is not None:  # rank 0 loads; TrainingLoop gives every rank rank 0's weights (World.sync_parameters)
            world.on_main(init.load_weights, model)
    else:
        tokenizer, model = distiller.tokenizer(), distiller.student()
    train_split, swap_rows = augment_train(prepared.dataset, cfg)  # train.identity_swap; train split only
    train_split, obfuscated_rows = obfuscate_train(train_split, prepared.dataset, cfg)  # train.obfuscate
    tc = cfg.train
    train_data, masked = mask_uncertain_negatives(encode(train_split, tokenizer, cfg.model.max_length),
                                                  tc.uncertain_negatives)
    val_data = sample_rows(encode(prepared.dataset["validation"], tokenizer, cfg.model.max_length),
                           tc.eval_max_rows, tc.seed)
    pos_weight = pos_weights(tc, train_data.labels)
    pad_id = tokenizer.pad_token_id or 0
    teacher = None if distiller is None else world.on_main(distiller.targets, train_data, pad_id, accel, progress_bar)

    # Metrics go nowhere until rank 0's run exists (below); the other ranks never track.
    loop = TrainingLoop(model, train_data, val_data, tc, run_dir, pad_id=pad_id,
                        pos_weight=pos_weight, log=lambda m, s: None, progress_bar=progress_bar, world=world,
                        should_stop=should_stop, accel=accel, teacher=teacher,
                        init_terms=None if init is None else init.terms)
    if init is not None and world.main:
        print(init.describe(loop.terms_init), file=sys.stderr)
    state = loop.resume() if resume else None
    if state is not None and distiller is not None:
        distiller.check_resume(state)
    if not world.main:  # rank 0 tracks, builds and registers; the others train and then wait for its result
        loop.fit()
        return world.on_main(lambda: None)
    tags = {"git_commit": git_commit(repo_root()), "backbone": cfg.model.backbone, "head": cfg.model.head,
            "config_file": config_file or "(defaults)", "run_dir": str(run_dir.resolve()),
            "world_size": str(world.size), "device": str(accel.device), "precision": accel.precision,
            **({} if distiller is None else distiller.tags()), **({} if init is None else init.tags())}
    with Run.start(uri, cfg.tracking.experiment, cfg.run_name or run_dir.name, tags,
                   resume_run_id=state["mlflow_run_id"] if state else None, system_metrics=tc.system_metrics,
                   parent_run_id=parent_run_id) as run:
        loop.log, loop.flush = run.log_metrics, run.flush
        if state is None:
            log_inputs(run, cfg, prepared, pos_weight, len(train_data), len(val_data),
                        {"derived.identity_swap_rows": swap_rows, "derived.obfuscated_rows": obfuscated_rows,
                         "derived.uncertain_negatives_masked": masked,
                         **({} if distiller is None else distiller.params()),
                         **({} if init is None else init.params())})
        else:
            print(f"resumed {run_dir} at step {loop.p.step} (epoch {loop.p.epoch}, batch {loop.p.batch})",
                  file=sys.stderr)
        try:
            loop.fit({"mlflow_run_id": run.run_id,
                      **({} if distiller is None else {"teacher_sha256": distiller.teacher_sha})})
        except TrackingLost as e:
            command = "train" if distiller is None else "distill"
            raise TrackingLost(f"{e}.\n{stopped_without_tracking(run_dir, run.run_id, config_file, command)}") from e
        if finish is None:
            return world.on_main(finish_trial, run, run_dir, loop)
        return world.on_main(finish, Trained(cfg, run, run_dir, prepared, tokenizer, loop, uri))


def stopped_without_tracking(run_dir: Path, run_id: str, config_file: str | None, subcommand: str = "train") -> str:
    """What a run that lost its tracking server mid-training left behind, and the command that continues it."""
    command = f"tweetguard {subcommand}{f' --config {config_file}' if config_file else ''} --resume run_name={run_dir.name}"
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return (f"Training stopped before its first checkpoint: `{command}` (with the same overrides) starts it "
                f"again as a new MLflow run once the server is back.")
    return (f"Training stopped; its checkpoint {checkpoint} is intact (the steps after it are redone). Once the server "
            f"is back, continue the same MLflow run {run_id} with the same command plus --resume: `{command}`.")


def prepare_run_dir(cfg: Config, resume: bool, kind: str = "train") -> tuple[Path, bool]:
    """The run dir (created, config.json written) and whether there is a checkpoint to resume from."""
    run_dir = run_dir_for(cfg, resume, kind)
    if resume and (run_dir / HISTORY_FILE).exists():
        raise FileExistsError(f"--resume: {run_dir} finished already ({HISTORY_FILE} written); nothing to resume")
    resume = resume and (run_dir / "checkpoints" / "latest").exists()
    if resume:
        check_resume_config(run_dir, cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(to_flat(cfg), indent=1) + "\n", encoding="utf-8")
    return run_dir, resume


def log_inputs(run, cfg: Config, prepared, pos_weight: list[float], n_train: int, n_val: int,
                extra: dict | None = None) -> None:
    """`extra`: more `derived.*` params (e.g. derived.identity_swap_rows, the copies in n_train)."""
    from serving.policies import POLICIES

    derived = {"derived.pos_weight": [round(w, 4) for w in pos_weight]} if pos_weight else {}
    derived.update(extra or {})
    run.log_params({**to_flat(cfg), **derived, "derived.train_rows": n_train, "derived.validation_rows": n_val})
    sources = [{**s, "path": str(Path(cfg.data.root) / s["name"])} for s in prepared.card.sources]
    splits = {split: len(prepared.dataset[split]) for split in prepared.dataset}
    run.log_data(prepared.card_json_path, prepared.card_md_path, prepared.path, prepared.fingerprint, sources, splits)
    run.set_tags({f"pos_weight.{p}": f"{w:.3f}" for p, w in zip(POLICIES, pos_weight)})
    if cfg.data.feedback:  # the exact human labels this run learned from (docs/labelling.md)
        from training.data.feedback import snapshots_hash

        run.set_tags({"feedback.snapshots_sha256": snapshots_hash(cfg.data.feedback)})


def finish_trial(run, run_dir: Path, loop) -> TrainResult:
    """`register=False`: the run's history and speed only; no artifact is built, logged or registered."""
    p = loop.p
    train_s = log_history(run, run_dir, p, {})
    return TrainResult(None, run.run_id, None, loop.kept()[2], p.step, p.stop_reason, p.examples / train_s,
                       p.elapsed / 60)


def log_history(run, run_dir: Path, p, metrics: dict[str, float]) -> float:
    """history.json (written and logged), final metrics + throughput, stop tags; returns the training seconds."""
    history = {"losses": p.losses, "evals": p.evals, "best_step": p.best_step, "stop_reason": p.stop_reason}
    (run_dir / HISTORY_FILE).write_text(json.dumps(history) + "\n", encoding="utf-8")
    train_s = max(p.elapsed - p.eval_seconds, 1e-9)
    run.log_metrics({**metrics, "examples_per_s": p.examples / train_s}, p.step)
    run.set_tags({"stop_reason": p.stop_reason, "best_step": str(p.best_step)})
    run.log_artifact_file(run_dir / HISTORY_FILE)
    for name in (SOURCE_TERMS_FILE, BEST_SOURCE_TERMS_FILE):  # train.source_terms: the learned terms (never in the
        if (run_dir / name).is_file():                          # model); the best step's: what init_from reads
            run.log_artifact_file(run_dir / name)
    return train_s
