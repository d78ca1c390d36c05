"""`tweetguard tune` (training.pipeline.search) on the tiny model: 2 trials x 5 steps, a sqlite study in tmp_path,
nested MLflow runs in the test store, resuming, the winner's registration, pruning and a crashed trial."""

from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from training.cli import main
from training.config import ConfigError, load_config
from training.pipeline.search import TARGETS, run_search, sample


def search_overrides(tmp_path, n_trials: int, winner: bool) -> list[str]:
    return [f"search.storage=sqlite:///{tmp_path / 'search.db'}", f"search.n_trials={n_trials}",
            "search.steps_per_trial=5", f"search.train_winner={str(winner).lower()}",
            "search.space.lr=[1.0e-3,3.0e-3]",  # the tiny model learns at about the fixture's lr
            "search.space.max_length=[16,32]"]  # the tiny backbone has 64 positions


def study_of(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="tweetguard-search", storage=f"sqlite:///{tmp_path / 'search.db'}")


def children(client: MlflowClient, parent_id: str) -> list:
    exp = client.get_experiment_by_name("tweetguard").experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return sorted(runs, key=lambda r: r.info.start_time)


@pytest.mark.integration  # an Optuna study of tiny training runs (slow)
def test_trials_are_nested_runs_the_study_resumes_and_the_winner_registers_once(
        tmp_path, mlflow_uri, write_tiny_train_config, capsys):
    config = write_tiny_train_config(tmp_path)
    client = MlflowClient(mlflow_uri)
    first = run_search(load_config(config, search_overrides(tmp_path, 2, winner=False)), config_file=str(config),
                       progress_bar=False)
    assert first.new_trials == 2 and first.winner is None
    assert [t.state for t in study_of(tmp_path).trials] == [TrialState.COMPLETE] * 2  # pruning starts after 2
    parent = client.get_run(first.parent_run_id)
    assert parent.data.tags["kind"] == "search" and parent.info.status == "FINISHED"
    assert parent.data.tags["best.trial"] == str(first.best.number) and "best_value" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"tweetguard-search-summary.md"}
    trials = children(client, parent.info.run_id)
    assert [r.data.tags["search.role"] for r in trials] == ["trial", "trial"]
    for number, run in enumerate(trials):
        assert run.info.status == "FINISHED" and run.data.params["train.max_steps"] == "5"
        assert run.data.tags["search.state"] == "COMPLETE"
        assert parent.data.tags[f"trial.{number}.run_id"] == run.info.run_id
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mean_pr_auc")] == [1, 2, 3, 4, 5]
        assert not (tmp_path / "runs" / run.info.run_name / "best").exists()  # trials keep no weights
    assert client.search_registered_models() == []  # trials are never registered

    # The same command again: the study has its 2 trials, nothing runs (through the CLI and its flags).
    argv = ["tune", "--config", str(config), "--trials", "2", "--no-winner", "--no-progress",
            *search_overrides(tmp_path, 2, winner=True)[:1], "search.steps_per_trial=5"]
    assert main(argv) == 0
    assert "0 new trial(s)" in capsys.readouterr().out
    assert len(study_of(tmp_path).trials) == 2 and len(children(client, parent.info.run_id)) == 2

    # One more trial, then the winner's full run: registered once, @challenger, under the same parent.
    third = run_search(load_config(config, search_overrides(tmp_path, 3, winner=True)), config_file=str(config),
                       progress_bar=False)
    assert third.new_trials == 1 and third.parent_run_id == parent.info.run_id
    study = study_of(tmp_path)
    assert [t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials] == [True] * 3
    runs = children(client, parent.info.run_id)
    assert [r.data.tags["search.role"] for r in runs] == ["trial"] * 3 + ["winner"]
    winner = runs[-1]
    assert winner.info.run_id == third.winner.run_id and winner.data.tags["search.trial"] == str(third.best.number)
    assert winner.data.params["train.max_steps"] == "None"  # the config's own budget, not a trial's
    for key, section in TARGETS.items():
        if key in third.best.params:
            assert str(winner.data.params[f"{section}.{key}"]) == str(third.best.params[key])
    versions = client.search_model_versions("name='tweetguard'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", winner.info.run_id)]
    assert str(client.get_model_version_by_alias("tweetguard", "challenger").version) == "1"

    # Rerun with the winner on: the best trial is the same, so it is not trained again.
    again = run_search(load_config(config, search_overrides(tmp_path, 3, winner=True)), config_file=str(config),
                       progress_bar=False)
    assert again.new_trials == 0 and again.winner is None
    assert len(client.search_model_versions("name='tweetguard'")) == 1


@pytest.mark.integration  # an Optuna study of tiny training runs (slow)
def test_pruned_trial_and_a_crashed_trial_rerun(tmp_path, mlflow_uri, write_tiny_train_config):
    config = write_tiny_train_config(tmp_path)
    cfg = load_config(config, search_overrides(tmp_path, 1, winner=True))
    # A trial a crash left RUNNING, with its params drawn.
    crashed = optuna.create_study(study_name="tweetguard-search", storage=cfg.search.storage, direction="maximize")
    params = sample(crashed.ask(), cfg.search.space)
    # A pruner that prunes at the first report, whatever the value (every PR-AUC is below 2).
    result = run_search(cfg, config_file=str(config), progress_bar=False,
                        pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study = study_of(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.PRUNED]
    assert study.trials[1].params == params and study.trials[1].user_attrs["retry_of"] == 0
    assert result.new_trials == 1 and result.best is None and result.winner is None  # no COMPLETE trial
    client = MlflowClient(mlflow_uri)
    [run] = children(client, result.parent_run_id)
    assert run.data.tags["search.state"] == "PRUNED"
    assert run.data.tags["stop_reason"] == "pruned by optuna at step 1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]  # stopped there
    assert client.get_run(result.parent_run_id).data.tags["trial.1.state"] == "PRUNED"
    assert client.search_registered_models() == []


def test_search_config_is_validated(tmp_path):
    cfg = load_config(None)
    assert cfg.search.n_trials == 8 and cfg.search.steps_per_trial == 300 and cfg.search.train_winner
    assert cfg.search.storage == "sqlite:///runs/search.db" and cfg.search.pruner.kind == "median"
    with pytest.raises(ConfigError, match="search.space.lr"):
        load_config(None, ["search.space.lr=[1.0e-3,1.0e-5]"])
    with pytest.raises(ConfigError, match="search.space.max_length"):
        load_config(None, ["search.space.max_length=[4]"])
