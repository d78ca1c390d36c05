import pytest

from training.config import ConfigError, load_config, to_flat


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("data:\n  seeed: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert "unknown config key 'data.seeed'" in str(e.value) and str(f) in str(e.value)


def test_bad_value_names_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("data:\n  validation_fraction: 0.9\n")
    with pytest.raises(ConfigError, match=r"data\.validation_fraction"):
        load_config(f)


def test_overrides_apply_after_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  seed: 1\n")
    cfg = load_config(f, ["data.seed=7", "data.exclude=[ethos]", "model.max_length=64"])
    assert (cfg.data.seed, cfg.data.exclude, cfg.model.max_length) == (7, ["ethos"], 64)


def test_override_errors_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"overrides data\.nope=1: unknown config key 'data\.nope'"):
        load_config(None, ["data.nope=1"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["data.seed"])
    with pytest.raises(ConfigError, match=r"data\.seed: Input should be a valid integer"):
        load_config(None, ["data.seed.x=1"])
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        load_config(None, ["data.seed=1", "data.seed.x=1"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_env_sets_data_root(monkeypatch):
    monkeypatch.setenv("TWEETGUARD_DATA_ROOT", "/somewhere")
    assert load_config().data.root == "/somewhere"


def test_flat_params_are_dotted_scalars():
    flat = to_flat(load_config())
    assert flat["data.seed"] == 13 and flat["model.max_length"] == 128
    assert not any(isinstance(v, dict) for v in flat.values())
