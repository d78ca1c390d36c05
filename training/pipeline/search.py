"""`tweetguard tune`: a small, resumable hyper-parameter search (Optuna), then one full run of the winner.

A trial is one `train()` call with the sampled params (`search.space`), `search.steps_per_trial` steps and
`search.evals_per_trial` validations. Each validation reports the metric to the trial, and the loop stops when
the pruner says so (`should_stop`, training.fit.loop): the trial is PRUNED. Trials are MLflow runs nested under
one parent "search" run (tag `mlflow.parentRunId`). They are never registered, and their weights are deleted.
The study lives in `search.storage` (sqlite). A rerun continues it until `search.n_trials` trials are COMPLETE
or PRUNED. A trial left RUNNING by a crash is marked FAIL and its params queued again, so run one `tune` per
study at a time. `search.train_winner` then trains the best params once with the config's own budget, registered
like `tweetguard train` (@challenger).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.config import Config, ConfigError, SearchConfig, repo_root, to_flat
from training.evaluation.render import table
from training.fit.command import HISTORY_FILE, TrainResult
from training.fit.loop import BEST_DIR, LAST_DIR
from training.pipeline.train import train
from training.tracking.runs import Run, client, git_commit, resolve_uri

TARGETS = {"lr": "train", "max_length": "model", "source_balance": "train", "pos_weight": "train",
           "pos_weight_cap": "train"}  # sampled param -> its config section
SUMMARY_FILE = "summary.md"  # <train.output_dir>/<study>-summary.md, and an artifact of the parent run


@dataclass
class SearchResult:
    parent_run_id: str
    new_trials: int  # trials finished by this call
    best: Any  # the best COMPLETE optuna FrozenTrial, or None
    winner: TrainResult | None  # None: not wanted, no COMPLETE trial, or trained by an earlier call
    summary_md: str


def sample(trial, space) -> dict[str, Any]:
    params = {"lr": trial.suggest_float("lr", *space.lr, log=True),
              "max_length": trial.suggest_categorical("max_length", space.max_length),
              "source_balance": trial.suggest_float("source_balance", *space.source_balance),
              "pos_weight": trial.suggest_categorical("pos_weight", space.pos_weight)}
    if params["pos_weight"] == "auto":  # the cap only matters then
        params["pos_weight_cap"] = trial.suggest_float("pos_weight_cap", *space.pos_weight_cap, log=True)
    return params


def with_params(cfg: Config, params: dict[str, Any], run_name: str, **train_overrides: Any) -> Config:
    raw = cfg.model_dump()
    for key, value in params.items():
        raw[TARGETS[key]][key] = value
    raw["train"].update(train_overrides)
    return Config.model_validate({**raw, "run_name": run_name})


def trial_config(cfg: Config, params: dict[str, Any], number: int) -> Config:
    s = cfg.search
    # Every trial runs its steps unless pruned (enough epochs; no early stopping: the pruner judges), and writes
    # no checkpoint (checkpoint_every_steps = its length): a crashed trial is re-run, not resumed.
    return with_params(cfg, params, f"{s.study_name}-trial-{number:03d}", max_steps=s.steps_per_trial,
                       epochs=max(cfg.train.epochs, s.steps_per_trial),
                       eval_every_steps=max(1, s.steps_per_trial // s.evals_per_trial),
                       checkpoint_every_steps=s.steps_per_trial, early_stopping_patience=None)


def open_study(s: SearchConfig, pruner=None):
    """The study (created or loaded); trials a crash left RUNNING are failed and their params queued again."""
    import optuna
    from optuna.trial import TrialState

    if s.storage.startswith("sqlite:///"):
        Path(s.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if pruner is None:
        pruner = optuna.pruners.NopPruner() if s.pruner.kind == "none" else optuna.pruners.MedianPruner(
            n_startup_trials=s.pruner.n_startup_trials, n_warmup_steps=s.pruner.n_warmup_steps)
    storage = optuna.storages.RDBStorage(s.storage)
    study = optuna.create_study(study_name=s.study_name, storage=storage, direction="maximize",
                                load_if_exists=True, pruner=pruner)
    study_id = storage.get_study_id_from_name(s.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                       TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        print(f"[search] trial {t.number} was left RUNNING by a crash: marked FAIL, its params queued again",
              file=sys.stderr)
    # Seed offset by the trials so far: a resumed study must not draw the first session's random params again.
    study.sampler = optuna.samplers.TPESampler(seed=s.seed + len(study.trials),
                                               n_startup_trials=s.sampler_startup_trials)
    return study


def finished(study, states=("COMPLETE", "PRUNED")) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=tuple(TrialState[x] for x in states))


def best_trial(study):
    return max(finished(study, ("COMPLETE",)), key=lambda t: t.value, default=None)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_table(study, metric: str, n_trials: int) -> str:
    best = best_trial(study)
    rows = []
    for t in study.trials:
        mark = " (best)" if best and t.number == best.number else ""
        value = "" if t.value is None else f"{t.value:.4f}{mark}"
        rows.append([t.number, t.state.name, value, *[_fmt(t.params.get(n, "")) for n in TARGETS],
                     t.user_attrs.get("mlflow_run_id", "")])
    head = [f"# Search `{study.study_name}`: {len(finished(study))}/{n_trials} trials finished", "",
            f"Best: trial {best.number}, {metric}={best.value:.4f}" if best else "Best: none (no COMPLETE trial)", ""]
    return "\n".join(head) + "\n" + table(["trial", "state", metric, *TARGETS, "MLflow run"], rows) + "\n"


def open_parent(study, cfg: Config, uri: str, config_file: str | None) -> Run:
    """The search's parent MLflow run: reopened when the study has one in this store, else created."""
    from mlflow.exceptions import MlflowException

    attrs = study.user_attrs
    if attrs.get("mlflow_uri") == uri and attrs.get("mlflow_parent_run_id"):
        try:
            return Run.start(uri, cfg.tracking.experiment, None, {}, resume_run_id=attrs["mlflow_parent_run_id"],
                             system_metrics=False)
        except MlflowException:
            pass  # deleted from the store: start a new parent
    tags = {"kind": "search", "study_name": cfg.search.study_name, "storage": cfg.search.storage,
            "git_commit": git_commit(repo_root()), "config_file": config_file or "(defaults)"}
    run = Run.start(uri, cfg.tracking.experiment, f"search-{cfg.search.study_name}", tags, system_metrics=False)
    run.log_params(to_flat(cfg))  # once: params never change, and a rerun may change search.n_trials
    study.set_user_attr("mlflow_parent_run_id", run.run_id)
    study.set_user_attr("mlflow_uri", uri)
    return run


def run_search(cfg: Config, *, config_file: str | None = None, progress_bar: bool = True,
               pruner=None) -> SearchResult:
    """Run (or continue) the study of `cfg.search`, then the winner; `pruner` replaces the configured one."""
    import optuna

    if cfg.model.kind != "transformer":
        raise ConfigError("tweetguard tune searches model.kind=transformer only")
    s, metric, uri = cfg.search, cfg.train.metric, resolve_uri(cfg.tracking.uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line of our own per trial instead
    study = open_study(s, pruner)
    before = len(finished(study))
    with open_parent(study, cfg, uri, config_file) as parent:
        parent.set_tags({"search.n_trials": str(s.n_trials)})

        def objective(trial) -> float:
            tcfg = trial_config(cfg, sample(trial, s.space), trial.number)

            def should_stop(metrics: dict[str, float], step: int) -> str:
                trial.report(metrics[metric], step)
                return f"pruned by optuna at step {step}" if trial.should_prune() else ""

            result = train(tcfg, config_file=config_file, progress_bar=progress_bar, register=False,
                           parent_run_id=parent.run_id, should_stop=should_stop)
            trial.set_user_attr("mlflow_run_id", result.run_id)
            pruned = result.stop_reason.startswith("pruned")
            Run(client(uri), result.run_id, uri).set_tags({
                "search.role": "trial", "search.trial": str(trial.number),
                "search.state": "PRUNED" if pruned else "COMPLETE"})
            for name in (BEST_DIR, LAST_DIR):  # a trial keeps its config.json and history.json, not its weights
                shutil.rmtree(Path(tcfg.train.output_dir) / tcfg.run_name / name, ignore_errors=True)
            if pruned:
                raise optuna.TrialPruned(result.stop_reason)
            return result.metrics[metric]

        def report(study, t) -> None:
            best = best_trial(study)
            parent.log_metrics({"trial_value": t.value} if t.value is not None else {}, t.number)
            parent.set_tags({f"trial.{t.number}.state": t.state.name,
                             f"trial.{t.number}.run_id": t.user_attrs.get("mlflow_run_id", "")})
            value = "" if t.value is None else f" {metric}={t.value:.4f}"
            best_text = f"{best.value:.4f} (trial {best.number})" if best else "-"
            print(f"[search] trial {t.number} {t.state.name}{value} ({len(finished(study))}/{s.n_trials} done) | "
                  f"best {best_text} | " + " ".join(f"{k}={_fmt(v)}" for k, v in t.params.items()),
                  file=sys.stderr, flush=True)

        if s.n_trials > before:
            study.optimize(objective, n_trials=s.n_trials - before, callbacks=[report])
        best = best_trial(study)
        if best:
            parent.log_metrics({"best_value": best.value}, len(finished(study)))
            parent.set_tags({"best.trial": str(best.number),
                             **{f"best.{k}": _fmt(best.params.get(k, "-")) for k in TARGETS}})
        summary = summary_table(study, metric, s.n_trials)
        path = Path(cfg.train.output_dir) / f"{s.study_name}-{SUMMARY_FILE}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(summary, encoding="utf-8")
        parent.log_artifact_file(path)
        winner = train_winner(study, best, cfg, parent, config_file, progress_bar) if s.train_winner else None
    return SearchResult(parent.run_id, len(finished(study)) - before, best, winner, summary)


def train_winner(study, best, cfg: Config, parent: Run, config_file: str | None, progress_bar: bool):
    """One full run (the config's own budget) of the best trial's params, registered; once per best trial."""
    if best is None:
        print("[search] no COMPLETE trial: no winner to train", file=sys.stderr)
        return None
    if study.user_attrs.get("winner_trial") == best.number and study.user_attrs.get("mlflow_uri") == parent.uri:
        print(f"[search] the winner (trial {best.number}) is trained already: MLflow run "
              f"{study.user_attrs.get('winner_run_id')}, version {study.user_attrs.get('winner_version')}",
              file=sys.stderr)
        return None
    wcfg = with_params(cfg, best.params, f"{cfg.search.study_name}-winner-trial-{best.number:03d}")
    run_dir = Path(wcfg.train.output_dir) / wcfg.run_name  # an interrupted winner continues from its checkpoint
    resume = (run_dir / "checkpoints" / "latest").exists() and not (run_dir / HISTORY_FILE).exists()
    print(f"[search] training the winner (trial {best.number}) with the config's budget: {wcfg.run_name}",
          file=sys.stderr, flush=True)
    result = train(wcfg, config_file=config_file, resume=resume, progress_bar=progress_bar,
                   parent_run_id=parent.run_id)
    Run(client(parent.uri), result.run_id, parent.uri).set_tags({"search.role": "winner",
                                                                 "search.trial": str(best.number)})
    parent.set_tags({"winner.run_id": result.run_id, "winner.version": str(result.model_version)})
    for key, value in {"winner_trial": best.number, "winner_run_id": result.run_id,
                       "winner_version": result.model_version}.items():
        study.set_user_attr(key, value)
    return result
