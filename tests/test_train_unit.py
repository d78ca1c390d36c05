"""Training contracts on the tiny model: masked loss, batching/sampling, config validation, seed control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.artifact import read_card
from serving.policies import POLICIES
from training.config import ConfigError, load_config
from training.fit.batches import (
    Encoded,
    auto_pos_weight,
    collate,
    encode,
    epoch_batches,
    label_weights,
    mask_uncertain_negatives,
    masked_bce,
    sampling_weights,
)
from training.fit.command import HISTORY_FILE
from training.pipeline.train import train


# -- loss ------------------------------------------------------------------------------------------------
def test_unknown_label_contributes_no_loss_and_no_gradient():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0]], requires_grad=True)
    labels = torch.tensor([[1, -1, 0], [-1, -1, 1]])
    loss = masked_bce(logits, labels, pos_weight=torch.tensor([2.0, 3.0, 4.0]))
    loss.backward()
    unknown = labels == -1
    assert torch.all(logits.grad[unknown] == 0)
    assert torch.all(logits.grad[~unknown] != 0)
    # Value: mean over the 3 known entries of the pos-weighted BCE.
    known = [(2.0, 1, 2.0), (0.5, 0, 4.0), (1.0, 1, 4.0)]
    expected = np.mean([-(w * y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))
                        for x, y, w in known])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_changing_an_unknown_entry_logit_changes_nothing():
    labels = torch.tensor([[1, -1, 0]])
    a = masked_bce(torch.tensor([[1.0, 5.0, -1.0]]), labels, None)
    b = masked_bce(torch.tensor([[1.0, -50.0, -1.0]]), labels, None)
    assert a.item() == b.item()


def test_all_unknown_batch_is_zero_loss_with_zero_gradient():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = masked_bce(logits, torch.full((4, 3), -1), None)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_auto_pos_weight_from_known_labels_capped():
    labels = np.array([[1, 0, -1], [0, 0, -1], [0, 1, -1], [0, 0, 1], [0, 0, 0]] * 10, dtype=np.int8)
    assert auto_pos_weight(labels, cap=3.0) == [3.0, 3.0, 1.0]  # 4:1, 4:1 capped; 1:1
    assert auto_pos_weight(labels, cap=10.0) == [4.0, 4.0, 1.0]
    assert auto_pos_weight(np.zeros((5, 3), dtype=np.int8), cap=10.0) == [1.0, 1.0, 1.0]  # no positives


# -- batching --------------------------------------------------------------------------------------------
def test_epoch_plan_covers_every_example_once_and_is_a_function_of_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    plan = epoch_batches(lengths, seed=1, epoch=0, batch_size=32, group=8)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(1003))
    again = epoch_batches(lengths, seed=1, epoch=0, batch_size=32, group=8)
    assert all(np.array_equal(a, b) for a, b in zip(plan, again))
    other = np.concatenate(epoch_batches(lengths, seed=1, epoch=1, batch_size=32, group=8))
    assert not np.array_equal(flat, other)


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(3, 60, size=2000)

    def padded(group: int) -> int:
        return sum(len(b) * lengths[b].max() for b in epoch_batches(lengths, seed=0, epoch=0, batch_size=32,
                                                                      group=group))

    assert padded(50) < 0.8 * padded(1)


def test_source_balanced_sampling_evens_out_sources():
    sources = ["big"] * 900 + ["small"] * 100
    w = sampling_weights(sources, alpha=1.0)
    assert w[:900].sum() == pytest.approx(0.5) and w[900:].sum() == pytest.approx(0.5)
    idx = np.concatenate(epoch_batches(np.full(1000, 10), seed=0, epoch=0, batch_size=50, group=1, alpha=1.0,
                                       sources=sources))
    share_small = np.mean(idx >= 900)
    assert 0.4 < share_small < 0.6  # natural mix would be 0.1


def test_encode_normalizes_and_collate_pads_dynamically(tmp_path, make_tiny_backbone):
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(make_tiny_backbone(tmp_path / "bb"))
    split = datasets.Dataset.from_dict({
        "text": ["@SomeOne you are STUPID https://t.co/x", "go home"],
        "labels": [[1, 1, -1], [0, -1, 0]], "source": ["a", "b"],
    })
    data = encode(split, tok, max_length=32)
    assert data.input_ids[0] == tok("@user you are stupid")["input_ids"]  # normalize_tweet applied
    batch = collate(data, np.array([1, 0]), tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(data.input_ids[0]))  # padded to this batch's longest only
    assert batch["attention_mask"][0].sum() == len(data.input_ids[1])
    assert batch["labels"].tolist() == [[0, -1, 0], [1, 1, -1]]


def test_uncertain_negatives_are_masked_only_where_the_rule_says():
    # rows: gab abusive+ violence- (masked), gab abusive- violence- (kept), gab abusive+ violence+ (kept),
    # other source abusive+ violence- (kept: the rule names gab only)
    labels = np.array([[1, -1, 0], [0, -1, 0], [1, -1, 1], [1, -1, 0]], dtype=np.int8)
    data = Encoded([[1]] * 4, labels, ["gab", "gab", "gab", "ethos"])
    out, masked = mask_uncertain_negatives(data, {"gab": {"violence": "abusive"}})
    assert masked == 1
    assert out.labels.tolist() == [[1, -1, -1], [0, -1, 0], [1, -1, 1], [1, -1, 0]]
    assert data.labels[0, 2] == 0  # the input is not changed
    assert mask_uncertain_negatives(data, {}) == (data, 0)
    with pytest.raises(ConfigError, match="no train rows of source 'olid'"):
        mask_uncertain_negatives(data, {"olid": {"violence": "abusive"}})



def test_label_weights_scale_each_known_label_and_keep_the_mean_over_known_labels():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 1.0]], requires_grad=True)
    labels = torch.tensor([[1, -1, 0], [0, -1, 1]])
    weights = torch.tensor([[0.5, 7.0, 1.0], [0.0, 7.0, 2.0]])
    loss = masked_bce(logits, labels, None, weights)
    loss.backward()
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), labels.clamp(min=0).float(),
                                                               reduction="none")
    assert loss.item() == pytest.approx(((0.5 * per[0, 0] + per[0, 2] + 2.0 * per[1, 2]) / 4).item(), rel=1e-6)
    assert logits.grad[0, 1] == 0 and logits.grad[1, 1] == 0 and logits.grad[1, 0] == 0  # unknown, unknown, w=0
    ones = masked_bce(logits.detach(), labels, None, torch.ones(2, 3))
    assert ones.item() == masked_bce(logits.detach(), labels, None).item()  # weight 1 everywhere = unweighted


def test_label_weights_are_built_per_source_and_policy():
    data = Encoded([[1]] * 3, np.zeros((3, 3), dtype=np.int8), ["davidson", "olid", "davidson"])
    w = label_weights(data, {"davidson": {"abusive": 0.5}})
    assert w.tolist() == [[0.5, 1, 1], [1, 1, 1], [0.5, 1, 1]]
    assert label_weights(data, {}) is None
    with pytest.raises(ConfigError, match="no train rows of source 'gab'"):
        label_weights(data, {"gab": {"abusive": 0.5}})


# -- optimizer -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_layer_lr_decay_gives_each_depth_its_learning_rate(tmp_path, make_tiny_backbone, decay):
    from serving.modeling import build_model
    from training.config import TrainConfig
    from training.fit.loop import make_optimizer

    model = build_model(make_tiny_backbone(tmp_path / "bb"), "mean")  # 2 layers
    optimizer, scheduler = make_optimizer(model, TrainConfig(lr=1e-3, layer_lr_decay=decay), total_steps=10)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert set(lr_of) == {id(p) for p in named.values()}  # every parameter, once
    for name, p in named.items():
        depth = 3 if "embeddings" in name else 2 if ".layer.0." in name else 1 if ".layer.1." in name else 0
        no_decay = p.ndim < 2 or "LayerNorm" in name
        assert lr_of[id(p)] == pytest.approx((1e-3 * decay ** depth, 0.0 if no_decay else 0.01)), name
    assert len(optimizer.param_groups) == (2 if decay == 1 else 8)
    for _ in range(3):  # warmup and decay scale every group alike: the ratios stay
        optimizer.step()
        scheduler.step()
    ratios = {g["lr"] / g["initial_lr"] for g in optimizer.param_groups}
    assert len({round(r, 12) for r in ratios}) == 1


def test_layer_lr_decay_refuses_a_model_whose_layers_it_cannot_name():
    from transformers import PretrainedConfig

    from training.config import TrainConfig
    from training.fit.loop import make_optimizer

    model = torch.nn.Linear(4, 3)  # no config at all: one lr is still fine, layer-wise decay is refused
    assert len(make_optimizer(model, TrainConfig(), total_steps=10)[0].param_groups) == 2
    for config in (None, PretrainedConfig(num_hidden_layers=2)):  # no layer count / no parameter named by layer
        model.config = config
        with pytest.raises(ValueError, match="train.layer_lr_decay"):
            make_optimizer(model, TrainConfig(layer_lr_decay=0.8), total_steps=10)


# -- config ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("train.lr=-0.001", "train.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio"),
    ("train.source_balance=2", "train.source_balance"),
    ("train.pos_weight=[1,2]", "train.pos_weight"),
    ("train.pos_weight=sometimes", "train.pos_weight"),
    ("model.head=max", "model.head"),
    ("train.uncertain_negatives={gab: {violence: threats}}", "train.uncertain_negatives"),
    ("train.label_weights={davidson: {threats: 0.5}}", "train.label_weights"),
    ("train.label_weights={davidson: {abusive: -1}}", "train.label_weights"),
    ("train.layer_lr_decay=1.5", "train.layer_lr_decay"),
    ("train.learning_rate=0.1", "train.learning_rate"),
])
def test_bad_train_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_validation_metric_is_named(tmp_path, mlflow_uri, write_tiny_train_config):
    cfg = load_config(write_tiny_train_config(tmp_path, max_steps=2), ["train.metric=accuracy"])
    with pytest.raises(KeyError, match="train.metric='accuracy'"):
        train(cfg, progress_bar=False)


# -- end to end, in process ------------------------------------------------------------------------------
def _history(run_dir: Path) -> dict:
    return json.loads((run_dir / HISTORY_FILE).read_text())


def test_same_seed_same_metrics_other_seed_differs(tmp_path, mlflow_uri, write_tiny_train_config):
    path = write_tiny_train_config(tmp_path, max_steps=12, grad_accum=2, eval_every_steps=6, source_balance=0.5)
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        cfg = load_config(path, [f"run_name={name}", f"train.seed={seed}"])
        result = train(cfg, progress_bar=False)
        runs[name] = (_history(result.artifact_dir.parent), result.metrics)
    (ha, ma), (hb, mb), (hc, _) = runs["a"], runs["b"], runs["c"]
    assert len(ha["losses"]) == 12
    assert ha["losses"] == hb["losses"] and ha["evals"] == hb["evals"] and ma == mb
    assert ha["losses"] != hc["losses"]


def test_label_weights_reach_the_training_loss(tmp_path, mlflow_uri, write_tiny_train_config):
    path = write_tiny_train_config(tmp_path, max_steps=4, eval_every_steps=4)
    zero = {"abusive": 0, "harassment": 0, "violence": 0}
    losses = {}
    for name, weights in (("plain", "{}"), ("double", "{tiny_violence: {violence: 2}}"),
                          ("zero", f"{{tiny_full: {zero}, tiny_violence: {{violence: 0}}}}")):
        cfg = load_config(path, [f"run_name={name}", f"train.label_weights={weights}"])
        losses[name] = _history(train(cfg, progress_bar=False).artifact_dir.parent)["losses"]
    assert losses["zero"] == [0.0] * 4  # every known label weighted 0: nothing to learn
    assert losses["double"] != losses["plain"]


def test_artifact_is_complete_and_thresholds_come_from_validation(
        tmp_path, mlflow_uri, write_tiny_train_config):
    cfg = load_config(write_tiny_train_config(tmp_path, max_steps=6), ["model.head=cls"])
    result = train(cfg, progress_bar=False)
    card = read_card(result.artifact_dir)
    assert [p.name for p in card.policies] == list(POLICIES)
    assert all("validation" in p.threshold_method for p in card.policies)
    assert card.head == "cls" and card.mlflow_run_id == result.run_id
    # Calibration + thresholds fit on validation by training.fit.calibration; the loop's best metrics kept beside.
    assert all(p.calibration.method == "platt" for p in card.policies)
    assert {f"train_kept/{k}": v for k, v in result.metrics.items()}.items() <= card.validation_metrics.items()
    assert "mean_pr_auc" in card.validation_metrics
    assert {s.name for s in card.sources} == {"tiny_full", "tiny_violence"} and card.dataset_hash
    assert card.config["train"]["max_steps"] == 6
    from serving.modeling import load_model

    assert type(load_model(result.artifact_dir)).__name__ == "BertForSequenceClassification"


@pytest.mark.integration
def test_fine_tunes_the_bundled_backbone_for_a_few_steps(tmp_path, mlflow_uri, write_tiny_train_config):
    from serving.backbone import BUNDLED_BACKBONE
    from serving.modeling import load_model

    config = write_tiny_train_config(tmp_path, max_steps=3, batch_size=8, eval_batch_size=64)
    cfg = load_config(config, [f"model.backbone={BUNDLED_BACKBONE}", "train.lr=5e-5", "model.max_length=32"])
    result = train(cfg, progress_bar=False)
    history = json.loads((tmp_path / "runs" / result.artifact_dir.parent.name / HISTORY_FILE).read_text())
    assert len(history["losses"]) == 3 and all(np.isfinite(history["losses"]))
    model = load_model(result.artifact_dir)
    assert model.config.hidden_size == 384 and read_card(result.artifact_dir).backbone == BUNDLED_BACKBONE
