"""Every shipped config loads through the one config system (torchtune's test_configs idea).

configs/ holds run configs only; the dataset facts they point at live in data/ (tests/test_data_files.py)."""

import json
import warnings
from pathlib import Path

import pytest

from training.config import MOVED_DATA_FILES, Config, load_config, repo_root

REPO = repo_root()
CONFIGS = REPO / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def test_the_run_configs_are_shipped():
    assert {"default.yaml", "quick.yaml"} <= {p.name for p in RUN_CONFIGS}
    assert not [old for old in MOVED_DATA_FILES if (REPO / old).exists()], "dataset facts belong in data/"


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_loads_and_shows_its_command(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a shipped config must not use a deprecated path
        cfg = load_config(path)
    assert isinstance(cfg, Config)
    header = path.read_text(encoding="utf-8").splitlines()[:6]
    assert header[0].startswith("#") and any(f"--config configs/{path.name}" in line for line in header), (
        f"{path.name}: the opening comment must show the command that runs it")


def test_quick_is_small_and_default_completes_its_epoch():
    """The default is one epoch that always completes (no step or wall-clock cap stops it early: a model stopped
    early is not the one measured); the quick config is small."""
    quick, default = load_config(CONFIGS / "quick.yaml"), load_config(CONFIGS / "default.yaml")
    assert quick.train.max_steps and quick.data.max_train_rows_per_source
    assert default.data.max_train_rows_per_source is None
    assert (default.train.epochs, default.train.max_steps, default.train.max_minutes) == (1, None, None)
    assert quick.data.sources_file == default.data.sources_file == Config().data.sources_file


def test_the_defaults_are_the_default_config():
    """A bare `tweetguard train` trains the measured default model: `Config()` is configs/default.yaml, the whole
    of it, compared as JSON (so 55 and 55.0 differ: both reach the MLflow params and the artifact's config)."""
    default = load_config(CONFIGS / "default.yaml")
    assert json.dumps(Config().model_dump(mode="json")) == json.dumps(default.model_dump(mode="json"))


def test_permissive_is_the_default_without_restricted_sources():
    """configs/permissive.yaml differs from default.yaml only in leaving out every non-commercial and research-only
    source (its prepared source list: tests/test_data.py, on tiny sources)."""
    default, permissive = load_config(CONFIGS / "default.yaml"), load_config(CONFIGS / "permissive.yaml")
    assert permissive.data.exclude_restricted and not default.data.exclude_restricted
    assert default.model_copy(update={"data": default.data.model_copy(update={"exclude_restricted": True})}
                              ).model_dump(mode="json") == permissive.model_dump(mode="json")
