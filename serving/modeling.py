"""The one model definition shared by training and inference (nanoGPT's model.py, for a classifier).

Two heads over any Hugging Face encoder:
- ``cls``: the stock ``AutoModelForSequenceClassification`` (reads the CLS pooler);
- ``mean``: masked mean pooling of the last hidden states, as the sentence-transformers backbone was trained,
  then dropout + linear. Implemented for BERT-family encoders (the bundled MiniLM is one).

Either is saved with ``save_pretrained`` and restored by ``load_model`` through ``from_pretrained`` alone:
the head is recorded in ``config.architectures``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

from serving.policies import POLICIES

Head = Literal["cls", "mean"]


class BertMeanPoolForMultiLabel(BertPreTrainedModel):
    """BERT encoder + masked mean pooling + linear: one logit per policy."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> SequenceClassifierOutput:
        hidden = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).last_hidden_state  # [B, T, H]
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, H]
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))  # [B, P]


def _label_kwargs() -> dict:
    return {
        "num_labels": len(POLICIES),
        "id2label": dict(enumerate(POLICIES)),
        "label2id": {p: i for i, p in enumerate(POLICIES)},
        "problem_type": "multi_label_classification",
    }


def build_model(backbone_dir: str | Path, head: Head) -> PreTrainedModel:
    """A fresh classifier on a pretrained encoder (a local HF dir, or a hub id)."""
    config = AutoConfig.from_pretrained(backbone_dir, **_label_kwargs())
    if head == "cls":
        return AutoModelForSequenceClassification.from_pretrained(backbone_dir, config=config)
    if config.model_type != "bert":
        raise ValueError(f"model.head=mean supports BERT-family backbones, not {config.model_type!r}; use head=cls")
    return BertMeanPoolForMultiLabel.from_pretrained(backbone_dir, config=config)


def load_model(model_dir: str | Path) -> PreTrainedModel:
    """Restore a saved classifier (either head) with ``from_pretrained``, in eval mode."""
    config = AutoConfig.from_pretrained(model_dir)
    if BertMeanPoolForMultiLabel.__name__ in (config.architectures or []):
        model = BertMeanPoolForMultiLabel.from_pretrained(model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return model.eval()

