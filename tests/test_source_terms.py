"""Per-(source, policy) label-semantics terms (train.source_terms): in the training loss only, trained and
checkpointed with the model, absent from the artifact and from everything scored after training."""

from __future__ import annotations

import inspect
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from serving.policies import POLICIES
from training.config import ConfigError, TrainConfig, load_config
from training.fit.batches import Encoded, collate, masked_bce
from training.fit.checkpoint import seed_everything
from training.fit.loop import LAST_DIR, TrainingLoop
from training.fit.source_terms import SOURCE_TERMS_FILE, SourceTerms

POOL = ["you", "are", "a", "the", "and", "i", "it", "is", "not", "so", "stupid", "idiot", "kill", "hurt", "love",
        "great", "day", "good", "go", "home"]
INSULTS, THREATS = {"stupid", "idiot"}, {"kill", "hurt"}


def _encoded(tok, n: int, seed: int) -> Encoded:
    """`plain` labels abusive / harassment / violence from the words; `all_pos`, every third row drawn from the
    same texts, calls everything abusive and labels nothing else (a corpus with a far broader notion)."""
    rng = random.Random(seed)
    texts, labels, sources = [], [], []
    for i in range(n):
        words = rng.choices(POOL, k=rng.randint(3, 10))
        a, v = int(bool(INSULTS & set(words))), int(bool(THREATS & set(words)))
        if i % 3 == 0:
            labels.append([1, -1, -1])
            sources.append("all_pos")
        else:
            labels.append([a, int(a and words[0] == "you"), v])
            sources.append("plain")
        texts.append(" ".join(words))
    ids = tok(texts, truncation=True, max_length=32)["input_ids"]
    return Encoded(ids, np.asarray(labels, dtype=np.int8), sources)


@pytest.fixture
def tiny(tmp_path, make_tiny_backbone):
    from transformers import AutoTokenizer

    backbone = make_tiny_backbone(tmp_path / "backbone")
    tok = AutoTokenizer.from_pretrained(backbone)
    return backbone, tok, _encoded(tok, 192, 0), _encoded(tok, 48, 1)


def _loop(tiny, run_dir: Path, mode: str, log=lambda m, s: None, **train) -> TrainingLoop:
    from serving.modeling import build_model

    backbone, tok, data, val = tiny
    seed_everything(0)  # the same head initialisation for every loop of a test
    model = build_model(backbone, "mean")
    # Plain training but for the terms (the defaults' weights name real sources, their sampling is balanced).
    plain = {"epochs": 3, "label_weights": {}, "source_balance": 0.0, "eval_every_steps": None, "eval_max_rows": None,
             "max_minutes": None}
    cfg = TrainConfig(**{**plain, "source_terms": mode, "batch_size": 16, "lr": 2e-3, "num_threads": 1,
                         "system_metrics": False, "early_stopping_patience": None,
                         "output_dir": str(run_dir.parent), **train})
    return TrainingLoop(model, data, val, cfg, run_dir, pad_id=tok.pad_token_id or 0, pos_weight=[1.0, 1.0, 1.0],
                        log=log, progress_bar=False)


# -- the loss ------------------------------------------------------------------------------------------------
def test_none_trains_on_the_plain_masked_bce_exactly(tiny, tmp_path):
    loop = _loop(tiny, tmp_path / "runs" / "none", "none")
    _, tok, data, _ = tiny
    assert loop.terms is None and loop.source_ids is None and loop.modules == [loop.model]
    assert len(loop.optimizer.param_groups) == 2  # no extra group: the optimizer state is today's
    idx = np.arange(16)
    assert set(collate(data, idx, tok.pad_token_id)) == {"input_ids", "attention_mask", "labels"}
    loop.model.train()
    torch.manual_seed(1)
    got = loop._micro_step(idx, 1)
    grads = [p.grad.clone() for p in loop.model.parameters()]
    loop.model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks
    batch = collate(data, idx, tok.pad_token_id)
    labels = batch.pop("labels")
    want = masked_bce(loop.model(**batch).logits, labels, loop.pos_weight)
    want.backward()
    assert got == want.item()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, loop.model.parameters()))


@pytest.mark.parametrize("mode", ["offset", "affine"])
def test_terms_start_as_the_identity_and_then_change_the_loss(mode):
    sources = ["a", "b", "a", "c"]
    labels = np.array([[1, 0, -1], [0, -1, -1], [1, 1, -1], [-1, 0, 1]], dtype=np.int8)
    terms = SourceTerms(sources, labels, list(POLICIES), mode, l2=0.0)
    assert terms.names == ["a", "b", "c"] and terms.index_of(sources).tolist() == [0, 1, 0, 2]
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0], [0.3, 0.2, -0.1], [1.0, -2.0, 3.0]])
    ids = torch.from_numpy(terms.index_of(sources))
    assert torch.equal(terms(logits, ids), logits)  # zero terms: exactly the plain logits
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        terms.offset.copy_(torch.tensor([[1.0, 0.5, 0.0], [-1.0, 2.0, 0.0], [0.0, -0.5, 3.0]]))
        if terms.log_scale is not None:
            terms.log_scale.copy_(torch.tensor([[0.5, -0.2, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.3, 0.0]]))
    with torch.no_grad():
        b, a = terms.effective()
    expected = logits * (1.0 if a is None else torch.exp(a[ids])) + b[ids]
    assert torch.allclose(terms(logits, ids), expected)
    assert masked_bce(terms(logits, ids), y, None).item() != pytest.approx(masked_bce(logits, y, None).item())
    # Centred per policy over the sources that label it (weighted by their labels): the loss-weighted mean term
    # is 0; a policy only one source labels (violence, here c) gets no term.
    for t in (b, a) if a is not None else (b,):
        assert torch.allclose((terms.weights * t).sum(0), torch.zeros(3), atol=1e-6)
        assert float(t[2, 2]) == pytest.approx(0.0, abs=1e-6)
    # An unknown label gives its term no gradient.
    terms.zero_grad()
    masked_bce(terms(logits, ids), y, None).backward()
    assert float(terms.offset.grad[1, 2]) == 0.0  # source b never labels violence


def test_l2_pulls_the_raw_parameters_to_zero():
    terms = SourceTerms(["a", "b"], np.array([[1], [0]], dtype=np.int8), ["abusive"], "affine", l2=0.5)
    with torch.no_grad():
        terms.offset.fill_(2.0)
        terms.log_scale.fill_(-1.0)
    assert terms.penalty().item() == pytest.approx(0.5 * (2 * 4.0 + 2 * 1.0))


# -- training ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["offset", "affine"])
def test_a_source_that_calls_everything_abusive_gets_a_positive_offset(tiny, tmp_path, mode):
    loop = _loop(tiny, tmp_path / "runs" / mode, mode, max_steps=12)
    assert len(loop.optimizer.param_groups) == 3 and loop.optimizer.param_groups[2]["weight_decay"] == 0.0
    loop.fit()
    report = json.loads((tmp_path / "runs" / mode / SOURCE_TERMS_FILE).read_text())
    assert report == loop.terms.report()
    assert set(report) == {"all_pos", "plain"} and set(report["all_pos"]) == {"abusive"}  # labelled pairs only
    # Centred: all_pos (1/3 of the abusive labels) up, plain (2/3) down by half as much.
    assert report["all_pos"]["abusive"]["offset"] > 0.05 and report["plain"]["abusive"]["offset"] < -0.02
    # harassment / violence: plain alone labels them, so their terms stay 0 (centred away)
    assert report["plain"]["violence"] == {"offset": 0.0, "scale": 1.0}
    plain = _loop(tiny, tmp_path / "runs" / f"{mode}-none", "none", max_steps=12)
    plain.fit()
    assert plain.p.losses[0] == loop.p.losses[0]  # the terms start at the identity ...
    assert plain.p.losses[1:] != loop.p.losses[1:]  # ... and then change the loss
    # The run's weights are the model's alone.
    assert load_file(loop.run_dir / LAST_DIR / "model.safetensors").keys() == \
        load_file(plain.run_dir / LAST_DIR / "model.safetensors").keys()


def test_resume_restores_the_terms_and_repeats_the_run_exactly(tiny, tmp_path):
    train = {"max_steps": 12, "checkpoint_every_steps": 4}
    straight = _loop(tiny, tmp_path / "runs" / "straight", "affine", **train)
    straight.fit()

    class Killed(Exception):
        pass

    def die_at_7(metrics, step):
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        _loop(tiny, tmp_path / "runs" / "killed", "affine", log=die_at_7, **train).fit()
    resumed = _loop(tiny, tmp_path / "runs" / "killed", "affine", **train)
    state = resumed.resume()
    assert state is not None and resumed.p.step == 4
    assert torch.equal(resumed.terms.offset, state["source_terms"]["state"]["offset"])
    assert resumed.terms.offset.abs().sum() > 0 and resumed.terms.log_scale.abs().sum() > 0
    resumed.fit()
    assert resumed.p.losses == straight.p.losses
    for a, b in zip(straight.terms.parameters(), resumed.terms.parameters()):
        assert torch.equal(a, b)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_without_terms_does_not_resume_a_run_with_terms(tiny, tmp_path):
    run_dir = tmp_path / "runs" / "r"
    _loop(tiny, run_dir, "none", max_steps=4, checkpoint_every_steps=2).fit()
    with pytest.raises(ValueError, match="holds no source terms"):
        _loop(tiny, run_dir, "offset", max_steps=4, checkpoint_every_steps=2).resume()


# -- end to end: nothing of the terms outside training -----------------------------------------------------------
def test_artifact_and_serving_carry_no_trace_of_the_terms(tmp_path, mlflow_uri, write_tiny_train_config):
    from mlflow import MlflowClient

    from serving.predictor import Predictor
    from training.pipeline.train import train

    config = write_tiny_train_config(tmp_path, max_steps=4)
    results = {mode: train(load_config(config, [f"run_name={mode}", f"train.source_terms={mode}"]),
                           progress_bar=False) for mode in ("none", "affine")}
    dirs = {mode: r.artifact_dir for mode, r in results.items()}
    assert sorted(p.name for p in dirs["none"].iterdir()) == sorted(p.name for p in dirs["affine"].iterdir())
    weights = {mode: load_file(d / "model.safetensors") for mode, d in dirs.items()}
    assert weights["none"].keys() == weights["affine"].keys()
    # The artifact is the kept weights (train.keep: last) as they are (no term folded into the head) ...
    kept = load_file(dirs["affine"].parent / LAST_DIR / "model.safetensors")
    assert kept.keys() == weights["affine"].keys() and all(torch.equal(kept[k], weights["affine"][k]) for k in kept)
    # ... and the scorer reads text only.
    assert list(inspect.signature(Predictor.logits).parameters) == ["self", "texts"]
    assert Predictor.load(dirs["affine"]).logits(["you are stupid", "go home"]).shape == (2, len(POLICIES))
    # The learned terms: in the run dir and in the MLflow run of the affine run only.
    assert (dirs["affine"].parent / SOURCE_TERMS_FILE).is_file()
    assert not (dirs["none"].parent / SOURCE_TERMS_FILE).exists()
    terms = json.loads((dirs["affine"].parent / SOURCE_TERMS_FILE).read_text())
    assert set(terms) == {"tiny_full", "tiny_violence"} and set(terms["tiny_violence"]) == {"violence"}
    client = MlflowClient(mlflow_uri)
    logged = {mode: {f.path for f in client.list_artifacts(r.run_id)} for mode, r in results.items()}
    assert SOURCE_TERMS_FILE in logged["affine"] and SOURCE_TERMS_FILE not in logged["none"]


def test_bad_source_terms_config_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.source_terms"):
        load_config(None, ["train.source_terms=scale"])
    with pytest.raises(ConfigError, match=r"train\.source_terms_l2"):
        load_config(None, ["train.source_terms_l2=-1"])
