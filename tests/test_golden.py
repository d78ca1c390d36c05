"""Golden logits: the quick config's model, built as `tweetguard train` builds it and scored through the serving
Predictor, gives the same raw logits on a fixed batch as when this file was pinned (to 1e-6).

configs/quick.yaml names the bundled MiniLM backbone, the mean head and max_length 64. The model is the one
`tweetguard train` starts from at that seed (`train.seed`, `serving.modeling.build_model`: the pretrained encoder
plus a seeded random head), saved with `serving.artifact.save_artifact` and loaded by
`serving.predictor.Predictor` on its reference (eager fp32 torch) path, as serving and evaluation load it. No
training steps: what a refactor of training, modeling or the predictor must not change is this path, and the
untrained model pins it without data or minutes of CPU.

The pinned numbers live in tests/golden/quick_logits.json. After an intended change of these numbers (a new
backbone, a preprocessing version, a different head initialisation), rewrite them with
    TWEETGUARD_GOLDEN_UPDATE=1 python -m pytest tests/test_golden.py
and say why in the commit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config, repo_root

GOLDEN_FILE = Path(__file__).parent / "golden" / "quick_logits.json"
ATOL = 1e-6
# Fixed batch: mixed lengths (length batching and padding), raw tweet features (mentions, URLs, entities, emoji),
# an empty text and one longer than max_length=64 tokens (truncated).
TEXTS = [
    "you are a stupid idiot",
    "",
    "@bob @alice i will find you and hurt you, shut up!!",
    "great day &amp; good day https://t.co/x \U0001F600",
    "I hope someone punches you in the face next time you open your mouth",
    "women should not be allowed to vote",
    "love this song so much",
    " ".join(["this is a very long tweet that keeps going"] * 12),
]


def quick_model_logits(tmp_path: Path) -> tuple[np.ndarray, dict]:
    """Raw logits [N, P] of the quick config's initial model on TEXTS, through the serving Predictor."""
    from transformers import AutoTokenizer

    from serving.artifact import PolicyCard, save_artifact
    from serving.backbone import resolve_backbone
    from serving.modeling import build_model
    from serving.predictor import Predictor
    from training.fit.checkpoint import seed_everything

    cfg = load_config(repo_root() / "configs" / "quick.yaml")
    seed_everything(cfg.train.seed)  # as `tweetguard train` seeds rank 0 before building the model
    backbone = resolve_backbone(cfg.model.backbone)
    model = build_model(backbone, cfg.model.head)
    card = PolicyCard(max_length=cfg.model.max_length, head=cfg.model.head, backbone=cfg.model.backbone)
    artifact = save_artifact(tmp_path / "model", model, AutoTokenizer.from_pretrained(backbone), card)
    predictor = Predictor.load(artifact, path="reference", batch_size=3)  # 3: several length batches
    facts = {"backbone": cfg.model.backbone, "head": cfg.model.head, "max_length": cfg.model.max_length,
             "seed": cfg.train.seed, "policies": list(predictor.policies)}
    return predictor.logits(TEXTS), facts


@pytest.mark.integration  # the real bundled backbone
def test_quick_config_logits_match_golden(tmp_path: Path) -> None:
    logits, facts = quick_model_logits(tmp_path)
    if os.environ.get("TWEETGUARD_GOLDEN_UPDATE") == "1":
        GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN_FILE.write_text(json.dumps({**facts, "texts": TEXTS, "logits": logits.tolist()}, indent=1) + "\n",
                               encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN_FILE}")
    golden = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
    assert golden["texts"] == TEXTS, "the fixed batch changed: rewrite the golden file (see the module doc)"
    assert {k: golden[k] for k in facts} == facts
    assert logits.shape == (len(TEXTS), len(facts["policies"]))
    np.testing.assert_allclose(logits, np.asarray(golden["logits"], dtype=np.float32), rtol=0, atol=ATOL)
