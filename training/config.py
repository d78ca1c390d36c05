"""The one config system: pydantic models with defaults, then a YAML file, then `key.sub=value` overrides.

Every field has a type, a default and a description; unknown keys are rejected with their dotted name and the
file (or override) they came from. The resolved config is what gets printed, logged to MLflow and saved in the
model artifact.
"""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from serving.backbone import BUNDLED_BACKBONE
from serving.policies import POLICIES

DEFAULT_DATA_ROOT = "../shared/datasets"


def repo_root() -> Path:
    """The repository root (the folder holding `training/`, `serving/`, `data/`, `configs/`): the one place a
    module's own location is turned into a repository path, so moving a module cannot break a lookup."""
    return Path(__file__).resolve().parent.parent


# Dataset facts that moved from configs/ to data/ (old path -> new path, both relative to the repository root).
# A config or override that still names an old path reads the new file, with a FutureWarning (shown to CLI
# users by default, unlike DeprecationWarning) naming the key, the old and the new path.
MOVED_DATA_FILES: dict[str, str] = {
    "configs/datasets.yaml": "data/sources.yaml",
    "configs/identity_terms.yaml": "data/identity_terms.yaml",
}


def moved_data_file(value: str, key: str) -> str:
    """`value` itself, or its new location if it names a moved file (as given, or any path ending in the old
    `configs/<name>`) that is not there; `key` (e.g. `data.sources_file`) is named in the warning."""
    path = Path(value)
    new = MOVED_DATA_FILES.get("/".join(path.parts[-2:]))
    if new is None or path.is_file():  # not an old path, or someone's own file that is still there
        return value
    moved = str(path.parent.parent / new)
    warnings.warn(f"{key}={value} is deprecated: the file moved to {moved}, which is read instead. "
                  f"Set {key} to {moved} (or drop the key: data/ is the default).", FutureWarning, stacklevel=2)
    return moved


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    root: str = Field(
        default_factory=lambda: os.environ.get("TWEETGUARD_DATA_ROOT", DEFAULT_DATA_ROOT),
        description="Directory holding the shared datasets (env TWEETGUARD_DATA_ROOT); relative to the CWD.",
    )
    sources_file: str = Field(
        "data/sources.yaml", description="Source declarations: files, splits, mapping (old path "
        "configs/datasets.yaml: deprecated, reads this file with a warning)."
    )
    include: list[str] | None = Field(None, description="Source names to use; null = every declared source.")
    exclude: list[str] = Field(default_factory=list, description="Source names to leave out.")
    opt_in: list[str] = Field(
        default_factory=list, description="Declared opt-in sources (opt_in: true in data/sources.yaml) to use as "
        "well; an opt-in source is left out unless named here."
    )
    exclude_licenses: list[str] = Field(
        default_factory=list,
        description="Leave out sources whose license tag is listed (e.g. GPL-3.0, unverified) for a release.",
    )
    exclude_restricted: bool = Field(
        False, description="Leave out every non-commercial (CC BY-NC-*) and research-only source, whatever the "
        "exact license string (training.data.sources.is_restricted): a model for commercial use "
        "(configs/permissive.yaml)."
    )
    seed: int = Field(13, description="Seed of the generated (stratified) splits.")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of a split-less source for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of a split-less source for test.")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="error: fail listing the first malformed rows; skip: drop them, counted in the card."
    )
    max_train_rows_per_source: int | None = Field(
        None, ge=1, description="Cap on train rows per source (seeded sample), for quick runs; null = all."
    )
    train_share: dict[str, float] = Field(
        default_factory=dict, description="Per source, the share of its train rows kept (a data.seed sample; "
        "validation and test untouched; a whole pair at a time where the source has pairs), e.g. {contrast: 0.25} "
        "for a learning curve, or a large new source brought in without lengthening the epoch. Unlisted sources "
        "keep every row."
    )
    feedback: str | None = Field(
        None, description="Folder of feedback snapshots (`tweetguard label import`, `tweetguard feedback "
        "snapshot`): set, the declared feedback source reads every snapshot in it (its latest verdicts are its "
        "test carve); null = no feedback, training exactly as without it."
    )
    cache_dir: str = Field("data/cache", description="Where prepared DatasetDicts are cached, keyed by content hash.")

    @field_validator("train_share")
    @classmethod
    def _shares(cls, v):
        bad = {k: x for k, x in v.items() if not 0 < x <= 1}
        if bad:
            raise ValueError(f"data.train_share: each share must be in (0, 1], got {bad}")
        return v

    @field_validator("sources_file")
    @classmethod
    def _moved_sources_file(cls, v):
        return moved_data_file(v, "data.sources_file")


class ModelConfig(Section):
    backbone: str = Field(
        BUNDLED_BACKBONE,
        description=f"'{BUNDLED_BACKBONE}' (the bundled MiniLM package), a local HF model dir, or a hub id.",
    )
    max_length: int = Field(128, ge=8, le=512, description="Tokens per text; longer texts are truncated.")
    head: Literal["cls", "mean"] = Field(
        "mean", description="cls: stock CLS-pooler classifier; mean: masked mean pooling (how MiniLM was trained)."
    )
    kind: Literal["transformer", "tfidf"] = Field(
        "transformer", description="transformer: fine-tune the backbone; tfidf: the baseline (section `baseline`)."
    )


class TrackingConfig(Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI; null = env MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."
    )
    experiment: str = Field("tweetguard", description="MLflow experiment name.")
    registered_model: str = Field("tweetguard", description="Registry name the trained model is registered under.")


class TrainConfig(Section):
    """Fine-tuning hyperparameters (`tweetguard train`). Steps are optimizer steps (after accumulation)."""

    seed: int = Field(42, description="Seeds python, numpy and torch: same seed + data + config -> same metrics.")
    epochs: int = Field(1, ge=1, description="Passes over the training data (upper bound; see max_steps/max_minutes).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps; null = epochs decide.")
    max_minutes: float | None = Field(
        None, gt=0, description="Wall-clock budget in minutes (training + evaluation); null = none. Not "
        "reproducible: a run it stops is a model of fewer steps than its config says."
    )
    init_from: str | None = Field(
        None, description="Start from a trained model instead of the bare backbone: a model reference (an artifact "
        "directory, runs:/<run_id>/model, models:/<name>@<alias> or models:/<name>/<version>). Its encoder and head "
        "weights, and its source terms (train.source_terms) for the sources they know (new sources start at the "
        "identity); the optimizer and lr schedule start fresh over this run's steps (train.max_steps caps a screen). "
        "Refused unless its head, policies, backbone shape and max_length are this config's "
        "(training.fit.init_from); a --resume continues from its checkpoint. null = the backbone."
    )
    batch_size: int = Field(32, ge=1, description="Examples per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (effective batch = product).")
    eval_batch_size: int = Field(256, ge=1, description="Examples per batch when scoring validation.")
    eval_max_rows: int | None = Field(
        3000, ge=1, description="Validate during training on a seeded sample of this many validation rows "
        "(cheaper early stopping); null = all. Calibration and thresholds always use the whole split."
    )
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases / LayerNorm).")
    layer_lr_decay: float = Field(
        1.0, gt=0, le=1, description="Layer-wise learning-rate decay: the head keeps `lr`, the top encoder layer "
        "gets lr x d, the next lr x d^2, ..., the embeddings lr x d^(layers + 1), so the lower, more general layers "
        "move less from the pre-trained backbone; 1 = one lr for all."
    )
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of the steps with linear warmup from 0.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping (global L2 norm); null = off.")
    pos_weight: Literal["auto", "none"] | list[float] = Field(
        "auto",
        description="Per-policy BCE positive weight: auto = negatives/positives in train (capped), none = 1, "
        "or one number per policy in POLICIES order.",
    )
    pos_weight_cap: float = Field(10.0, ge=1, description="Upper bound for pos_weight=auto.")
    identity_swap: float = Field(
        0.5, ge=0, le=1, description="Counterfactual identity-term swap augmentation of the train split only "
        "(training.fit.augment): of the train rows that mention a term of evaluation.identity_terms (the bias "
        "slices' matcher), this share get one copy, labels kept, with each term replaced by a term of another "
        "subgroup of the same category (women -> men, muslim -> jewish), case kept; 0 = off. Transformer "
        "training only; the copies added are logged as derived.identity_swap_rows."
    )
    obfuscate: float = Field(
        0.0, ge=0, le=1, description="Share of the train rows (those with a word of 4+ letters and a known label) "
        "that get one copy with a random word re-spelled as filters are evaded (look-alike digits or symbols, "
        "spaced or dotted letters, a masked vowel, a stretched letter), labels unchanged (training.fit.obfuscate); "
        "0 = off. The copies added are logged as derived.obfuscated_rows."
    )
    uncertain_negatives: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Train split only: {source: {policy: other_policy}}: a negative label "
        "of `policy` on a train row of `source` whose `other_policy` label is positive is masked in the loss "
        "(unknown), e.g. {gab_hate_corpus: {violence: abusive}} (Gab's rare call-for-violence label misses hateful "
        "posts that call for killing). Validation and test keep every source label; the masked count is logged "
        "as derived.uncertain_negatives_masked."
    )
    label_weights: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {"davidson_hate_offensive": {"abusive": 0.5}, "olid": {"abusive": 2.0},
                                 "vulgar_functions": {"abusive": 2.0}},
        description="Train split only: {source: {policy: weight}}: each known label of "
        "`policy` on a train row of `source` counts `weight` times in the loss (1 where none is given; 0 = ignored, like an "
        "unknown label; the batch loss still divides by the number of known labels), e.g. "
        "{davidson_hate_offensive: {abusive: 0.5}} to weigh a profanity-inclusive notion down against the sources "
        "whose labels are the policy. Validation, calibration and test are unweighted."
    )
    source_balance: float = Field(
        0.3, ge=0, le=1, description="Sampling weight per example ~ 1/size(source)^alpha: 0 = natural mix "
        "(each example once per epoch), 1 = every source equally often (with replacement)."
    )
    source_terms: Literal["none", "offset", "affine"] = Field(
        "affine", description="Per-(source, policy) label-semantics terms in the training loss only "
        "(training.fit.source_terms): offset = a learned bias b[s,p] added to the logit of a row from source s "
        "for policy p (absorbs the source's base rate); affine = logit * exp(a[s,p]) + b[s,p] (also absorbs how "
        "broad or sharp its notion is). Centred per policy over the sources that label it, so the shared logit "
        "carries the policy. Never in the artifact: validation, calibration and serving use the plain logits. "
        "none = plain masked BCE."
    )
    source_terms_l2: float = Field(
        1e-3, ge=0, description="L2 on the source terms (a and b toward 0), added to each step's loss."
    )
    source_terms_lr: float = Field(
        1e-2, gt=0, description="Peak learning rate of the source terms (own AdamW group, same schedule, no "
        "weight decay)."
    )
    length_group: int = Field(
        50, ge=1, description="Batches per length-sorted mega-batch (dynamic padding wastes less); 1 = no grouping."
    )
    eval_every_steps: int | None = Field(
        300, ge=1, description="Validate every N steps as well as at each epoch end; null = epoch ends only."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many validations without improving the metric; null = never."
    )
    metric: str = Field(
        "mean_pr_auc", description="Validation metric to maximize (key of training.metrics output)."
    )
    weight_averaging: Literal["none", "swa", "ema"] = Field(
        "swa", description="Average the weights over the last part of the schedule (torch.optim.swa_utils."
        "AveragedModel, updated every step from train.averaging_start): swa = equal weights, ema = exponential "
        "(train.ema_decay). Validations from then on score the averaged weights; which weights the artifact "
        "keeps is train.keep."
    )
    keep: Literal["best", "last"] = Field(
        "last", description="The weights the artifact is built from: best = the best monitored validation's "
        "(train.metric on train.eval_max_rows rows; with weight averaging it may come before averaging starts), "
        "last = the final weights (with weight averaging: the average itself)."
    )
    averaging_start: float = Field(
        0.75, ge=0, lt=1, description="Share of the schedule's steps after which weight averaging starts."
    )
    ema_decay: float = Field(0.998, gt=0, lt=1, description="EMA decay per step (train.weight_averaging=ema).")
    checkpoint_every_steps: int = Field(200, ge=1, description="Write a resumable checkpoint every N steps.")
    bf16: bool = Field(False, description="CPU: bfloat16 autocast for forward/backward (fast on CPUs with AMX).")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where training runs: auto = cuda when torch sees a GPU, else cpu. Under torchrun each "
        "rank uses cuda:<LOCAL_RANK> and the NCCL backend (gloo on CPU). Evaluation and serving stay on CPU."
    )
    amp: bool = Field(
        True, description="CUDA only: mixed precision (bf16 autocast where the GPU supports it, else fp16 with a "
        "gradient scaler). CPU precision is train.bf16."
    )
    num_threads: int | None = Field(2, ge=1, description="torch.set_num_threads; null = torch's default.")
    output_dir: str = Field("runs", description="Run dirs (checkpoints, artifact) go to <output_dir>/<run_name>.")
    log_every_steps: int = Field(1, ge=1, description="Log train loss to MLflow every N steps.")
    system_metrics: bool = Field(True, description="Log CPU/memory system metrics to the MLflow run.")

    @field_validator("uncertain_negatives")
    @classmethod
    def _uncertain_negatives_policies(cls, v):
        for source, rules in v.items():
            for policy, other in rules.items():
                if policy not in POLICIES or other not in POLICIES or policy == other:
                    raise ValueError(f"{source}: {policy}: {other}: expected two different policies of {POLICIES}")
        return v

    @field_validator("label_weights")
    @classmethod
    def _label_weights_policies(cls, v):
        for source, weights in v.items():
            for policy, weight in weights.items():
                if policy not in POLICIES or not 0 <= weight < float("inf"):
                    raise ValueError(f"{source}: {policy}: {weight}: expected a policy of {POLICIES} and a "
                                     "weight >= 0")
        return v

    @field_validator("pos_weight")
    @classmethod
    def _pos_weight_per_policy(cls, v):
        if isinstance(v, list) and (len(v) != len(POLICIES) or any(x <= 0 for x in v)):
            raise ValueError(f"needs {len(POLICIES)} positive numbers, one per policy {POLICIES}")
        return v


class BaselineConfig(Section):
    """TF-IDF + one logistic regression per policy (`model.kind: tfidf`, training.fit.baseline)."""

    word_ngram_range: tuple[int, int] = Field((1, 2), description="Word n-gram sizes (min, max).")
    char_ngram_range: tuple[int, int] = Field(
        (2, 5), description="Character n-gram sizes (min, max), within word boundaries (char_wb)."
    )
    word_max_features: int | None = Field(200_000, ge=1, description="Top word n-grams kept; null = all.")
    char_max_features: int | None = Field(300_000, ge=1, description="Top char n-grams kept; null = all.")
    min_df: int = Field(2, ge=1, description="Drop n-grams seen in fewer train texts (noise, memorized ids).")
    sublinear_tf: bool = Field(True, description="tf -> 1 + log(tf), so a repeated word does not dominate.")
    # Validation sweep on the full data (C 1/4/16 x class_weight none/balanced): mean PR-AUC within 0.005
    # everywhere up to C=4; C=1 had the best ROC-AUC and abusive/harassment PR-AUC, and fits fastest.
    C: float = Field(1.0, gt=0, description="Inverse L2 regularization strength of each logistic regression.")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight classes inversely to their frequency (skews probabilities up)."
    )
    max_iter: int = Field(2000, ge=10, description="lbfgs iterations per policy.")

    @field_validator("word_ngram_range", "char_ngram_range")
    @classmethod
    def _ngram_range(cls, v):
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"needs 1 <= min <= max, got {list(v)}")
        return v


class TierTargets(Section):
    """Validation precision each decision tier of one policy is chosen for (null: no such tier)."""

    review: float | None = Field(0.6, gt=0, le=1, description="precision target of the review tier")
    remove: float | None = Field(0.9, gt=0, le=1, description="precision target of the remove tier")

    @model_validator(mode="after")
    def _ordered(self):
        if self.review is not None and self.remove is not None and self.review > self.remove:
            raise ValueError(f"review target {self.review} is above remove target {self.remove}")
        return self


# Per policy, the default targets that differ from TierTargets': at the default 3% deployment prevalence no
# harassment threshold reaches review precision 0.6 or 0.5 on validation (best 0.484), so its review target is
# 0.4 (docs/experiments/2026-12-06-deployment-prevalence.md).
TIER_TARGET_DEFAULTS: dict[str, dict[str, float]] = {"harassment": {"review": 0.4}}

# One TierTargets per policy, fields named from POLICIES (so `calibration.tiers.violence.remove=0.8` works).
# A policy with its own defaults gets a TierTargets subclass, so a partial override (`...harassment.remove=0.8`)
# keeps that policy's other defaults.
_TARGETS = {p: create_model(f"TierTargets_{p}", __base__=TierTargets, **{
    tier: (float | None, Field(value, gt=0, le=1, description=f"precision target of the {tier} tier"))
    for tier, value in TIER_TARGET_DEFAULTS.get(p, {}).items()}) for p in POLICIES}
TiersConfig = create_model(
    "TiersConfig", __base__=Section, **{p: (_TARGETS[p], Field(default_factory=_TARGETS[p])) for p in POLICIES}
)


class CalibrationConfig(Section):
    """Last stage of training (`training.fit.calibration.finalize_card`): fit on validation, stored in the card."""

    method: Literal["none", "temperature", "platt", "isotonic"] = Field(
        "platt", description="Per-policy calibration of the logits, fit on validation (masked labels): "
        "platt = temperature plus a bias, which also undoes the base-rate shift of train.pos_weight."
    )
    threshold_method: Literal["max_f1", "precision", "recall"] = Field(
        "max_f1", description="max_f1, or the threshold that reaches `threshold_target` precision / recall."
    )
    threshold_target: float | None = Field(
        None, gt=0, le=1, description="Target precision or recall (0-1) for threshold_method precision / recall."
    )
    deployment_prevalence: float | None = Field(
        0.03, gt=0, lt=1, description="Share of each policy's positives expected in real traffic: the review / "
        "remove tiers reach their precision targets as if validation had that rate (stated in the card), so a "
        "bento queues a workable share of traffic; null = validation's own mix (~45% abusive). The flag "
        "threshold uses it only with flag_at_deployment_prevalence."
    )
    flag_at_deployment_prevalence: bool = Field(
        False, description="Choose the flag threshold at deployment_prevalence too; false = at the validation "
        "mix (max F1 there), so benchmark F1s keep their meaning."
    )
    tiers: TiersConfig = Field(  # type: ignore[valid-type]
        default_factory=TiersConfig, description="Per policy, the precision targets of the review and remove "
        "decision tiers (policy card v2): the lowest threshold reaching each target on calibrated validation "
        "scores; an unreachable target leaves its tier off, recorded in the card."
    )
    tier_min_positives: int = Field(
        20, ge=1, description="A tier needs this many validation positives at or above its threshold: a "
        "precision measured on fewer is too noisy to promise, so the tier stays off."
    )

    @model_validator(mode="after")
    def _target_for_method(self):
        if self.threshold_method != "max_f1" and self.threshold_target is None:
            raise ValueError(f"threshold_method={self.threshold_method} needs threshold_target (0-1)")
        return self


class EvalConfig(Section):
    """`tweetguard evaluate` / `promote` (training.evaluation.evaluate, training.registry.promote)."""

    split: str = Field("test", description="Split that `evaluate` scores (promotion always decides on validation).")
    bootstrap_samples: int = Field(1000, ge=50, description="Resamples for the 95% CIs and the promotion gate.")
    seed: int = Field(0, description="Bootstrap seed: same seed + scores -> same intervals.")
    report_prevalence: float | None = Field(
        None, gt=0, lt=1, description="Share of positives in traffic at which precision is also reported; "
        "null = calibration.deployment_prevalence (or 0.03 where that is null)."
    )
    identity_terms: str = Field(
        "data/identity_terms.yaml", description="Identity-term list for bias slices (old path "
        "configs/identity_terms.yaml: deprecated, reads this file with a warning)."
    )
    slur_swear_terms: str = Field(
        "data/slur_swear_terms.yaml", description="Slur-and-swear list (frozen) of the evaluation slice 'posts "
        "with a slur or swear word': a post is in it when a listed term is a whole word of its normalized text."
    )
    behaviour_suite: str | None = Field(
        "data/behaviour_suite.yaml", description="Behaviour suite (hand-written cases per capability, evaluation "
        "only) scored beside the metrics by evaluate and promote; null = skip."
    )
    min_slice_support: int = Field(
        20, ge=1, description="A bias slice is judged only with at least this many positives and negatives."
    )
    top_errors: int = Field(10, ge=0, description="False positives / negatives listed per policy.")
    batch_size: int = Field(64, ge=1, description="Texts per forward pass when scoring.")
    output_dir: str = Field("reports", description="Report directories go to <output_dir>/<name>.")

    @field_validator("identity_terms")
    @classmethod
    def _moved_identity_terms(cls, v):
        return moved_data_file(v, "evaluation.identity_terms")


class PrunerConfig(Section):
    """Optuna's median stopping rule: a trial stops at a validation whose best value so far is below the median
    of the finished trials' values at the same step."""

    kind: Literal["median", "none"] = Field("median", description="median: optuna MedianPruner; none: no pruning.")
    n_startup_trials: int = Field(
        2, ge=0, description="No pruning until this many trials have finished (they set the median)."
    )
    n_warmup_steps: int = Field(
        100, ge=0, description="Training step of a trial from which it may be pruned (earlier validations are "
        "reported, never judged)."
    )


class SearchSpace(Section):
    """What each trial samples, all of it TrainConfig / ModelConfig fields; a range with min == max (or a one-item
    list) fixes that value."""

    lr: tuple[float, float] = Field((1e-5, 1e-4), description="train.lr range (min, max), sampled log-uniformly.")
    max_length: list[int] = Field([64, 128], min_length=1, description="model.max_length choices.")
    source_balance: tuple[float, float] = Field((0.0, 0.6), description="train.source_balance range (min, max).")
    pos_weight: list[Literal["auto", "none"]] = Field(
        ["auto", "none"], min_length=1, description="train.pos_weight choices."
    )
    pos_weight_cap: tuple[float, float] = Field(
        (3.0, 20.0), description="train.pos_weight_cap range (min, max), log-uniform; sampled when pos_weight=auto."
    )

    @field_validator("lr", "source_balance", "pos_weight_cap")
    @classmethod
    def _range(cls, v, info):
        low, high = {"lr": (1e-12, 1.0), "source_balance": (0.0, 1.0), "pos_weight_cap": (1.0, 1e6)}[info.field_name]
        if not low <= v[0] <= v[1] <= high:
            raise ValueError(f"needs {low} <= min <= max <= {high}, got {list(v)}")
        return v

    @field_validator("max_length")
    @classmethod
    def _lengths(cls, v):
        if any(not 8 <= x <= 512 for x in v):
            raise ValueError(f"every max_length needs 8..512, got {v}")
        return v


class SearchConfig(Section):
    """`tweetguard tune` (training.pipeline.search): an Optuna study of short trials, then one full run of the winner."""

    n_trials: int = Field(8, ge=1, description="Finished (complete or pruned) trials the study needs; <= 8 "
                          "recommended on 2 cores (each trial is a steps_per_trial training run).")
    steps_per_trial: int = Field(300, ge=1, description="train.max_steps of every trial.")
    evals_per_trial: int = Field(
        3, ge=1, description="Validations per trial (train.eval_every_steps = steps_per_trial // this): the "
        "pruner's intermediate values."
    )
    storage: str = Field(
        "sqlite:///runs/search.db", description="Optuna storage URL; the study lives there and resumes from it."
    )
    study_name: str = Field("tweetguard-search", description="Optuna study name (also names the runs).")
    seed: int = Field(0, description="Sampler seed (offset by the trials already in the study on a resume).")
    sampler_startup_trials: int = Field(
        4, ge=0, description="Trials sampled at random before TPE models the results."
    )
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    space: SearchSpace = Field(default_factory=SearchSpace)
    train_winner: bool = Field(
        True, description="After the study, train the best trial's params with the config's own budget and "
        "register it (@challenger), like `tweetguard train`."
    )


class MonitorConfig(Section):
    """`tweetguard monitor` (training.evaluation.monitor): served score logs vs the version's validation scores."""

    psi_threshold: float = Field(
        0.2, gt=0, description="Drift alarm: exit 3 when any policy's PSI (served vs validation scores) reaches "
        "this (0.1-0.2 is commonly read as a moderate shift, above 0.2 as a large one)."
    )
    psi_bins: int = Field(10, ge=2, description="PSI bins: quantiles of the reference scores (ties merge bins).")
    min_rows: int = Field(
        500, ge=1, description="Fewer served lines of the model than this: no verdict, exit 4 (too few to compare)."
    )
    output_dir: str = Field("reports", description="Report directories go to <output_dir>/monitor-<model>.")


class DistillConfig(Section):
    """`tweetguard distill` (training.fit.distill): a student with fewer encoder layers, initialised from the
    teacher's, trained on the teacher's logits and the known labels. lr, epochs, batch size, budgets: `train`."""

    teacher: str = Field(
        "models:/tweetguard@champion", description="The teacher model reference (`--teacher` sets it): a "
        "registered version, runs:/<run_id>/model or an artifact directory. Its tokenizer, head and backbone are "
        "the student's."
    )
    layers: int | list[int] = Field(
        3, description="Teacher encoder layers copied into the student: a count n (n evenly spaced layers, the "
        "first and the last always among them: [0, 2, 5] of 6 for 3), or the 0-based indices, ascending."
    )
    alpha: float = Field(
        0.5, ge=0, le=1, description="Weight of the teacher term: loss = alpha * soft BCE(student, teacher) + "
        "(1 - alpha) * the masked label BCE of training (unknown labels masked; source terms if train enables them)."
    )
    temperature: float = Field(
        2.0, gt=0, description="Both logits are divided by it in the teacher term, which is multiplied by T^2 "
        "(Hinton et al. 2015); 1 = match the teacher's probabilities as they are."
    )
    registered_model: str = Field(
        "tweetguard-fast", description="Registry name of the students (@challenger = the newest); never "
        "tracking.registered_model: a student is never a candidate for that model's @champion."
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"needs at least 1 layer, got {v}")
        if isinstance(v, list) and (not v or v[0] < 0 or any(b <= a for a, b in itertools.pairwise(v))):
            raise ValueError(f"needs distinct layer indices >= 0 in ascending order, got {v}")
        return v


class QuantizeConfig(Section):
    """`tweetguard quantize` (training.pipeline.quantize, the graph in training.fit.quantize): static int8 of a registered model, registered under
    distill.registered_model; calibration, thresholds and tiers come from the `calibration` section."""

    calibration_rows: int = Field(
        1024, ge=1, description="Train texts (a train.seed sample) whose activations set the int8 ranges (MinMax)."
    )


class Config(Section):
    run_name: str | None = Field(None, description="MLflow run name; null = generated.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)

    @model_validator(mode="after")
    def _fast_tier_apart(self):
        if self.distill.registered_model == self.tracking.registered_model:
            raise ValueError(f"distill.registered_model={self.distill.registered_model!r} is "
                             "tracking.registered_model: a distilled student is never a candidate for its @champion")
        return self


M = TypeVar("M", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=3e-5` -> (["train", "lr"], 3e-5); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _describe(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{origin}: unknown config key '{key}'")
        else:
            lines.append(f"{origin}: {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def validate(model: type[M], raw: dict[str, Any], origin: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key.sub=value` overrides, validated; errors name the file or override."""
    raw = read_yaml(path) if path else {}
    origin = str(path) if path else "defaults"
    if overrides:
        validate(Config, raw, origin)  # blame the file for its own mistakes before applying overrides
        origin = f"{origin} + overrides {' '.join(overrides)}"
        raw = apply_overrides(raw, overrides)
    return validate(Config, raw, origin)


def to_flat(cfg: BaseModel) -> dict[str, Any]:
    """`{"data.seed": 13, ...}` for MLflow params and printing."""
    return _flatten(cfg.model_dump(mode="json"), "")


def mapping_fields(cfg: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of the fields that hold a plain mapping (e.g. `train.label_weights`): their flattened keys
    are the mapping's own keys, so an empty one flattens to nothing."""
    out: list[str] = []
    for name in type(cfg).model_fields:
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            out += mapping_fields(value, f"{prefix}{name}.")
        elif isinstance(value, dict):
            out.append(f"{prefix}{name}")
    return out


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
