"""From the unified dataset to training batches: tokenization, the epoch plan, dynamic padding.

The epoch plan (which examples, in which batches, in which order) is a pure function of (seed, epoch), so
a resumed run rebuilds it and skips to the saved batch position: no sampler object state to pickle, and no
batch repeated or skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from serving.policies import NEGATIVE, POLICIES, POSITIVE, UNKNOWN
from serving.preprocess import normalize_tweet
from training.config import ConfigError


@dataclass
class Encoded:
    """One split, tokenized without padding."""

    input_ids: list[list[int]]
    labels: np.ndarray  # [N, P] int8, -1 = unknown
    sources: list[str]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split, tokenizer, max_length: int) -> Encoded:
    """Normalize (the one `normalize_tweet`) and tokenize every text of a `datasets.Dataset` split."""
    texts = [normalize_tweet(t) for t in split["text"]]
    ids = tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]
    labels = np.asarray(split["labels"], dtype=np.int8).reshape(len(texts), len(POLICIES))
    return Encoded(ids, labels, list(split["source"]))


def sample_rows(data: Encoded, n: int | None, seed: int) -> Encoded:
    """A seeded subset of at most n rows (original order kept); the data itself when n is None or larger."""
    if n is None or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng([seed, n]).choice(len(data), size=n, replace=False))
    return Encoded([data.input_ids[i] for i in idx], data.labels[idx], [data.sources[i] for i in idx])


def auto_pos_weight(labels: np.ndarray, cap: float) -> list[float]:
    """negatives / positives per policy over the known labels, in [1, cap]; 1 when a policy has no positives."""
    out = []
    for j in range(labels.shape[1]):
        pos, neg = int((labels[:, j] == POSITIVE).sum()), int((labels[:, j] == NEGATIVE).sum())
        out.append(float(min(max(neg / pos, 1.0), cap)) if pos else 1.0)
    return out


def pos_weights(train_cfg, labels: np.ndarray) -> list[float]:
    """`train.pos_weight` resolved for these labels: "auto" (`auto_pos_weight`), "none" (all 1) or the list."""
    if train_cfg.pos_weight == "auto":
        return auto_pos_weight(labels, train_cfg.pos_weight_cap)
    return [1.0] * labels.shape[1] if train_cfg.pos_weight == "none" else list(train_cfg.pos_weight)


def mask_uncertain_negatives(data: Encoded, rules: dict[str, dict[str, str]]) -> tuple[Encoded, int]:
    """`train.uncertain_negatives` applied: for each {source: {policy: other}} rule, a `policy` negative on a row
    of `source` whose `other` label is positive becomes unknown. Returns the data (a copy of the labels when a rule
    applies) and how many labels were masked. A rule naming a source with no rows here is an error."""
    if not rules:
        return data, 0
    sources = np.asarray(data.sources)
    labels = data.labels.copy()
    for source, by_policy in rules.items():
        rows = source_rows(sources, source, "train.uncertain_negatives")
        for policy, other in by_policy.items():
            j, k = POLICIES.index(policy), POLICIES.index(other)
            labels[rows & (labels[:, j] == NEGATIVE) & (labels[:, k] == POSITIVE), j] = UNKNOWN
    masked = int((labels != data.labels).sum())
    return Encoded(data.input_ids, labels, data.sources), masked


def label_weights(data: Encoded, weights: dict[str, dict[str, float]]) -> np.ndarray | None:
    """`train.label_weights` as a [N, P] float32 array over `data`'s rows (1 where no weight is given), or None
    when there is none. A weight naming a source with no rows here is an error."""
    if not weights:
        return None
    sources = np.asarray(data.sources)
    out = np.ones(data.labels.shape, dtype=np.float32)
    for source, by_policy in weights.items():
        rows = source_rows(sources, source, "train.label_weights")
        for policy, weight in by_policy.items():
            out[rows, POLICIES.index(policy)] = weight
    return out


def source_rows(sources: np.ndarray, source: str, key: str) -> np.ndarray:
    """Which rows are `source`'s; a rule of config `key` naming a source with no rows here is an error."""
    rows = sources == source
    if not rows.any():
        raise ConfigError(f"{key}: no train rows of source {source!r} "
                          f"(sources here: {sorted(set(sources.tolist()))})")
    return rows


def sampling_weights(sources: list[str], alpha: float) -> np.ndarray:
    """Per-example probability ~ 1 / size(source)^alpha (alpha=1: each source equally likely)."""
    sizes = Counter(sources)
    w = np.array([sizes[s] ** -alpha for s in sources], dtype=np.float64)
    return w / w.sum()


def epoch_batches(
    lengths: np.ndarray, *, seed: int, epoch: int, batch_size: int, group: int, alpha: float = 0.0,
    sources: list[str] | None = None,
) -> list[np.ndarray]:
    """The batches of one epoch, as arrays of example indices.

    Examples are drawn (a permutation, or weighted with replacement when alpha > 0), cut into mega-batches of
    `group` batches, each sorted by length so a batch pads to similar lengths, then the batch order is
    shuffled so the model does not see short-to-long sweeps.
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(lengths)
    if alpha > 0:
        assert sources is not None, "source-balanced sampling needs the source of each example"
        order = rng.choice(n, size=n, replace=True, p=sampling_weights(sources, alpha))
    else:
        order = rng.permutation(n)
    mega = batch_size * group
    batches: list[np.ndarray] = []
    for start in range(0, n, mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(data: Encoded, idx: np.ndarray, pad_id: int, source_ids: np.ndarray | None = None,
            teacher_logits: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest text in this batch (dynamic padding).

    `source_ids` (int [N] over the whole split, training.fit.source_terms.SourceTerms.index_of) adds each row's
    source index as "source_ids" [B], for the loss's source terms; `teacher_logits` (float [N, P] over the whole
    split, `TeacherTargets.logits`) adds each row's as "teacher_logits" [B, P], for distillation. The model never
    receives either."""
    seqs = [data.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # [B, T]
    attention = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
    for row, s in enumerate(seqs):
        input_ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
        attention[row, :len(s)] = 1
    labels = torch.from_numpy(data.labels[idx].astype(np.int64))  # [B, P]
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    if source_ids is not None:
        batch["source_ids"] = torch.from_numpy(np.asarray(source_ids[idx], dtype=np.int64))  # [B]
    if teacher_logits is not None:
        batch["teacher_logits"] = torch.from_numpy(np.asarray(teacher_logits[idx], dtype=np.float32))  # [B, P]
    return batch


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the known labels only: an unknown (-1) label adds neither loss nor gradient.

    logits [B, P] float, labels [B, P] in {-1, 0, 1}, pos_weight [P] or None, weights [B, P] or None (each known
    label's loss times its weight, `train.label_weights`; the mean still divides by the known count). A batch with
    no known label returns a zero that still belongs to the graph (backward works, gradients are zero).
    """
    known = labels >= 0  # [B, P]
    targets = labels.clamp(min=0).float()
    # float32 loss even under bf16 autocast: the log-sum-exp of a rare class loses too much in bf16.
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.float(), targets, pos_weight=pos_weight, reduction="none"
    )  # [B, P]
    if weights is not None:
        per = per * weights.float()
    # where() rather than multiply: an unknown label's logit must not even receive a 0 * inf = NaN gradient.
    per = torch.where(known, per, torch.zeros_like(per))
    return per.sum() / known.sum().clamp(min=1)


@dataclass
class TeacherTargets:
    """Distillation (`tweetguard distill`, training.fit.distill): the teacher's raw logits for every train row, and
    how its term is mixed into the loss (`distill.alpha`, `distill.temperature`)."""

    logits: np.ndarray  # [N, P] float32, row i = train row i
    alpha: float
    temperature: float

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, label_loss: torch.Tensor) -> torch.Tensor:
        """alpha * soft_bce(student, teacher) + (1 - alpha) * label_loss (the masked BCE of training)."""
        return self.alpha * soft_bce(student, teacher, self.temperature) + (1 - self.alpha) * label_loss


def soft_bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean BCE of sigmoid(student / T) against sigmoid(teacher / T) over every row and policy (the teacher knows
    every label), times T^2 so the gradient's scale does not shrink with T (Hinton et al. 2015). Both logits are
    softened: the minimum is at student = teacher for any T. student, teacher [B, P]; float32 like masked_bce."""
    t = float(temperature)
    targets = torch.sigmoid(teacher.float() / t)
    return torch.nn.functional.binary_cross_entropy_with_logits(student.float() / t, targets) * (t * t)
