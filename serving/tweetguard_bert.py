"""tweetguard's mean-pooling head as Hugging Face remote code: this file is saved beside the weights of every
mean-head model (`save_pretrained`, through `register_for_auto_class`), so the stock auto classes load it:

    AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True)

gives the model's raw logits, one per policy (`config.id2label`); apply `sigmoid` and the calibration of
`policy_card.json` for tweetguard's probabilities, or use tweetguard's Predictor / the MLflow model, which do.
Self-contained on purpose: it imports only torch and transformers, never tweetguard's packages.

`model_type` is `tweetguard_bert`, not `bert`: a stock load without `trust_remote_code` then fails loudly,
instead of building `BertForSequenceClassification` with a random pooler and head (silently wrong scores).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel


class TweetGuardBertConfig(BertConfig):
    """A BERT encoder config for the mean-pooling multi-label head."""

    model_type = "tweetguard_bert"


class BertMeanPoolForMultiLabel(BertPreTrainedModel):
    """BERT encoder + masked mean pooling + linear: one raw logit per label (multi-label)."""

    config_class = TweetGuardBertConfig

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


# save_pretrained writes `auto_map` into config.json and copies this file beside the weights.
TweetGuardBertConfig.register_for_auto_class()
BertMeanPoolForMultiLabel.register_for_auto_class("AutoModelForSequenceClassification")
