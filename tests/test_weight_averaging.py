"""train.weight_averaging: SWA / EMA of the weights over the schedule's last part (torch.optim.swa_utils), scored by
the validations from then on, kept as the artifact's weights, and restored exactly on resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training.config import TrainConfig
from training.fit.batches import Encoded
from training.fit.checkpoint import seed_everything
from training.fit.loop import BEST_DIR, LAST_DIR, TrainingLoop
from training.fit.source_terms import BEST_SOURCE_TERMS_FILE

WORDS = ["you", "are", "a", "stupid", "idiot", "kill", "hurt", "love", "great", "day", "go", "home"]


@pytest.fixture
def tiny(tmp_path, make_tiny_backbone):
    from transformers import AutoTokenizer

    backbone = make_tiny_backbone(tmp_path / "backbone")
    tok = AutoTokenizer.from_pretrained(backbone)

    def encoded(n, seed):
        rng = random.Random(seed)
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(n)]
        labels = [[int("stupid" in t or "idiot" in t), -1, int("kill" in t or "hurt" in t)] for t in texts]
        return Encoded(tok(texts, truncation=True, max_length=24)["input_ids"], np.asarray(labels, dtype=np.int8),
                       ["s"] * n)

    return backbone, tok, encoded(128, 0), encoded(32, 1)


def _loop(tiny, run_dir: Path, log=lambda m, s: None, should_stop=None, **train) -> TrainingLoop:
    from serving.modeling import build_model

    backbone, tok, data, val = tiny
    seed_everything(0)
    cfg = TrainConfig(**{"epochs": 1, "max_steps": 8, "batch_size": 16, "lr": 2e-3, "num_threads": 1,
                         "label_weights": {}, "source_balance": 0.0, "source_terms": "none", "eval_every_steps": 1,
                         "eval_max_rows": None, "max_minutes": None, "system_metrics": False,
                         "checkpoint_every_steps": 4, "weight_averaging": "none", "output_dir": str(run_dir.parent), **train})
    return TrainingLoop(build_model(backbone, "mean"), data, val, cfg, run_dir, pad_id=tok.pad_token_id or 0,
                        pos_weight=[1.0, 1.0, 1.0], log=log, progress_bar=False, should_stop=should_stop)


def _weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / name / "model.safetensors")


def test_swa_keeps_the_mean_of_the_last_steps_weights(tiny, tmp_path):
    """Averaging starts after step floor(0.5 * 8) = 4: the kept weights are the mean of steps 5-8's weights (a
    plain run of the same seed follows the same trajectory: averaging never touches training)."""
    seen = {}
    plain = _loop(tiny, tmp_path / "runs" / "plain")
    plain.should_stop = lambda m, step: seen.setdefault(step, {k: v.detach().clone() for k, v in
                                                               plain.model.state_dict().items()}) and ""
    plain.fit()
    swa = _loop(tiny, tmp_path / "runs" / "swa", weight_averaging="swa", averaging_start=0.5, keep="best")
    swa.fit()
    assert swa.p.losses == plain.p.losses and int(swa.averaged.n_averaged) == 4
    assert [e.get("averaged_steps") for e in swa.p.evals] == [None] * 4 + [1, 2, 3, 4]
    kept = _weights(swa.run_dir, LAST_DIR)
    for name, value in kept.items():
        if value.is_floating_point():
            want = torch.stack([seen[s][name] for s in range(5, 9)]).mean(0)
            torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)
    assert not torch.equal(kept["classifier.weight"], plain.model.state_dict()["classifier.weight"])
    # The validations after step 4 scored the averaged weights, and the best one of them is what BEST holds.
    if swa.p.best_step > 4:
        assert _weights(swa.run_dir, BEST_DIR).keys() == kept.keys()


def test_ema_resumes_exactly_after_a_crash(tiny, tmp_path):
    train = {"weight_averaging": "ema", "averaging_start": 0.25, "ema_decay": 0.9}
    straight = _loop(tiny, tmp_path / "runs" / "straight", **train)
    straight.fit()
    assert int(straight.averaged.n_averaged) == 6

    class Killed(Exception):
        pass

    def die_at_6(metrics, step):
        if step == 6:
            raise Killed
        return ""

    with pytest.raises(Killed):
        _loop(tiny, tmp_path / "runs" / "killed", should_stop=die_at_6, **train).fit()
    resumed = _loop(tiny, tmp_path / "runs" / "killed", **train)
    state = resumed.resume()
    assert state is not None and resumed.p.step == 4 and int(resumed.averaged.n_averaged) == 2
    resumed.fit()
    assert resumed.p.losses == straight.p.losses
    a, b = _weights(straight.run_dir, LAST_DIR), _weights(resumed.run_dir, LAST_DIR)
    assert all(torch.equal(a[k], b[k]) for k in a)
    _loop(tiny, tmp_path / "runs" / "plain-ckpt", max_steps=6).fit()  # a checkpoint without averaged weights
    with pytest.raises(ValueError, match="no averaged weights"):
        _loop(tiny, tmp_path / "runs" / "plain-ckpt", **train).resume()


def test_keep_chooses_the_artifacts_weights(tiny, tmp_path):
    """train.keep: best = the best monitored validation's folder, step and metrics; last = the final weights (here
    the SWA average), validated at the last step, whatever validation said of the earlier steps."""
    train = {"weight_averaging": "swa", "averaging_start": 0.5}
    best = _loop(tiny, tmp_path / "runs" / "best", keep="best", **train)
    best.fit()
    assert best.kept() == (BEST_DIR, best.p.best_step, best.p.best_metrics)
    last = _loop(tiny, tmp_path / "runs" / "last", keep="last", **train)
    last.fit()
    folder, step, metrics = last.kept()
    assert (folder, step) == (LAST_DIR, 8) and last.p.losses == best.p.losses
    assert not (last.run_dir / BEST_DIR).exists()  # keep=last never writes the best validation's weights
    assert metrics == {k: v for k, v in last.p.evals[-1].items() if k not in ("step", "epoch", "averaged_steps")}
    assert metrics["mean_pr_auc"] == last.p.evals[-1]["mean_pr_auc"] and "averaged_steps" not in metrics
    kept = _weights(last.run_dir, folder)
    averaged = last.averaged.module.state_dict()
    assert all(torch.equal(kept[k], averaged[k]) for k in kept)
    # With source terms, the terms written for train.init_from are the kept (final) step's.
    terms = _loop(tiny, tmp_path / "runs" / "terms", keep="last", source_terms="affine", **train)
    terms.fit()
    saved = json.loads((terms.run_dir / BEST_SOURCE_TERMS_FILE).read_text())
    assert saved["step"] == 8 and terms.kept()[1] == 8 and terms.p.best_step != 8, terms.p.best_step
