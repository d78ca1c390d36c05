"""The one model definition shared by training and inference (nanoGPT's model.py, for a classifier).

Two heads over any Hugging Face encoder:
- ``cls``: the stock ``AutoModelForSequenceClassification`` (reads the CLS pooler);
- ``mean``: masked mean pooling of the last hidden states, as the sentence-transformers backbone was trained,
  then dropout + linear. Implemented for BERT-family encoders (the bundled MiniLM is one), in
  `serving/tweetguard_bert.py` (model_type ``tweetguard_bert``), which is saved beside the weights so the stock
  auto classes load it with ``trust_remote_code=True``.

Either is saved with ``save_pretrained`` and restored by ``load_model`` through ``from_pretrained`` alone:
the head is recorded in ``config.architectures``. Mean-head models saved before the remote-code file (model_type
``bert``) still load here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from serving.policies import POLICIES
from serving.tweetguard_bert import BertMeanPoolForMultiLabel, TweetGuardBertConfig

Head = Literal["cls", "mean"]
# A parameter's encoder layer index: bert.encoder.layer.3., distilbert.transformer.layer.3., model.layers.3., ...
# (layer-wise learning rates in training.fit.loop; the layers a distilled student copies in training.fit.distill).
ENCODER_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
# In our own processes the head loads without remote code: the auto classes know its model_type.
AutoConfig.register(TweetGuardBertConfig.model_type, TweetGuardBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(TweetGuardBertConfig, BertMeanPoolForMultiLabel, exist_ok=True)


def _label_kwargs() -> dict:
    return {
        "num_labels": len(POLICIES),
        "id2label": dict(enumerate(POLICIES)),
        "label2id": {p: i for i, p in enumerate(POLICIES)},
        "problem_type": "multi_label_classification",
    }


def _as_ours(config) -> TweetGuardBertConfig:
    """A BERT config (a backbone's, or a mean-head artifact saved before model_type tweetguard_bert) as ours."""
    if isinstance(config, TweetGuardBertConfig):
        return config
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "auto_map", "transformers_version")}
    return TweetGuardBertConfig(**fields)


def build_model(backbone_dir: str | Path, head: Head) -> PreTrainedModel:
    """A fresh classifier on a pretrained encoder (a local HF dir, or a hub id)."""
    config = AutoConfig.from_pretrained(backbone_dir, **_label_kwargs())
    if head == "cls":
        return AutoModelForSequenceClassification.from_pretrained(backbone_dir, config=config)
    if config.model_type != "bert":
        raise ValueError(f"model.head=mean supports BERT-family backbones, not {config.model_type!r}; use head=cls")
    return BertMeanPoolForMultiLabel.from_pretrained(backbone_dir, config=_as_ours(config))


def load_model(model_dir: str | Path) -> PreTrainedModel:
    """Restore a saved classifier (either head) with ``from_pretrained``, in eval mode."""
    config = AutoConfig.from_pretrained(model_dir)
    if BertMeanPoolForMultiLabel.__name__ in (config.architectures or []):
        model = BertMeanPoolForMultiLabel.from_pretrained(model_dir, config=_as_ours(config))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return model.eval()

