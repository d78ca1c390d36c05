"""Every shipped config loads through the one config system (torchtune's test_configs idea)."""

from pathlib import Path

import pytest

from training.config import Config, load_config
from training.bias import load_identity_terms
from training.sources import load_sources

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Not training configs: read by their own loaders (named in their header comments).
NOT_RUN_CONFIGS = {"datasets.yaml": load_sources, "identity_terms.yaml": load_identity_terms}
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in NOT_RUN_CONFIGS)


def test_the_run_configs_are_shipped():
    assert {"default.yaml", "quick.yaml"} <= {p.name for p in RUN_CONFIGS}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_loads_and_shows_its_command(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    header = path.read_text(encoding="utf-8").splitlines()[:6]
    assert header[0].startswith("#") and any(f"--config configs/{path.name}" in line for line in header), (
        f"{path.name}: the opening comment must show the command that runs it")


def test_quick_is_small_and_default_is_budgeted():
    quick, default = load_config(CONFIGS / "quick.yaml"), load_config(CONFIGS / "default.yaml")
    assert quick.train.max_steps and quick.data.max_train_rows_per_source
    assert default.data.max_train_rows_per_source is None and default.train.max_minutes <= 45
    assert quick.data.sources_file == default.data.sources_file


@pytest.mark.parametrize("name", sorted(NOT_RUN_CONFIGS))
def test_other_configs_load_with_their_own_loader(name):
    assert NOT_RUN_CONFIGS[name](CONFIGS / name)
