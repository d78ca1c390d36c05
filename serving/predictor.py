"""The one inference path: model artifact -> calibrated per-policy probabilities.

Serving, evaluation, batch scoring and notebooks all score through `Predictor`, so offline numbers are served
numbers. Texts are normalized with `normalize_tweet`, sorted longest first, batched by length (each batch padded
to its own longest text, which is within `PAD_SLACK` of all its texts) and returned in input order. A text's
score does not depend on its batch-mates (beyond float noise), which `tests/test_predictor.py` checks.

`path` names the numeric path (`serving.fastpath`): "reference" (eager fp32 torch), "onnxruntime" (the same fp32
graph under ONNX Runtime) or "bf16"; "auto" picks the fastest one that agrees with reference on this machine.
Every path plugs in at `_forward` and is checked against "reference" for agreement (tests/test_fastpaths.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from serving import fastpath
from serving.artifact import TIERS, ArtifactError, PolicyCard, TierThresholds, calibrate, decide, read_card
from serving.fastpath import PATHS, Forward
from serving.preprocess import normalize_tweet

# Padding a batch may add up to max(8 tokens, 25% of its longest text) per text. Best of 4|8 tokens x 20-50%
# on shared test tweets (onnxruntime, 2 cores): calls of 32 random tweets went from 62 to 148 texts/s.
PAD_SLACK = (8, 0.25)


def _check_texts(texts: Sequence[str]) -> list[str]:
    # A bare str is a Sequence too: iterating it would silently score single characters.
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of str (e.g. a list), got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return list(texts)


class Predictor:
    """A loaded model artifact that scores texts. Build with `Predictor.load(model_dir)`."""

    def __init__(
        self,
        forward: Forward,
        tokenizer: PreTrainedTokenizerBase,
        card: PolicyCard,
        *,
        batch_size: int = 64,
        path: str = "reference",
        model_dir: Path | None = None,
    ):
        if path not in PATHS:
            raise ValueError(f"path={path!r}: available inference paths are {PATHS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.forward = forward
        self.tokenizer = tokenizer
        self.card = card
        self.policies: tuple[str, ...] = tuple(p.name for p in card.policies)
        self.max_length: int = card.max_length
        self.batch_size = batch_size
        self.path = path
        self.model_dir = model_dir

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        *,
        batch_size: int = 64,
        num_threads: int | None = None,
        path: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> Predictor:
        """Read and validate the artifact (card, label layout, max length), then load weights and tokenizer.

        `num_threads` sets torch's intra-op threads for the whole process (torch has no per-model setting) and
        ONNX Runtime's for this model. `path` is one of `PATHS` or "auto" (the default, as in the service:
        evaluation, batch scoring and serving run the same numeric path). `cache_dir` holds the onnxruntime
        path's exported graph (default $TWEETGUARD_CACHE_DIR, else ~/.cache/tweetguard); the model directory
        itself is never written.
        """
        model_dir = Path(model_dir)
        card = read_card(model_dir)  # validates schema, policy names/order, preprocessing version
        requested, path = path, fastpath.resolve_path(path)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        config = read_model_config(model_dir)
        _check_model(config, card, model_dir)
        # With the config given, the auto tokenizer does not look up the model type (ours is remote code to it).
        tokenizer = AutoTokenizer.from_pretrained(model_dir, config=config)
        if card.quantization is not None:  # its scores are the graph it carries (serving.fastpath)
            path = _quantized_path(card, requested, model_dir)
            forward = fastpath.onnx_forward(model_dir / card.quantization.graph, list(tokenizer.model_input_names),
                                            torch.get_num_threads())
        elif path == "onnxruntime":
            names = list(tokenizer.model_input_names)
            graph = fastpath.onnx_file(model_dir, names, cache_dir)
            forward = fastpath.onnx_forward(graph, names, torch.get_num_threads())
        else:
            from serving.modeling import load_model  # not imported on the onnxruntime path: ~1-2 s of start-up

            forward = fastpath.torch_forward(load_model(model_dir), bf16=path == "bf16")
        return cls(forward, tokenizer, card, batch_size=batch_size, path=path, model_dir=model_dir)

    def __repr__(self) -> str:
        return f"Predictor({self.model_dir}, path={self.path!r}, max_length={self.max_length})"

    # ---- scoring ---------------------------------------------------------------------------------------------
    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw (uncalibrated) logits [N, P] in input order."""
        return self._score(_check_texts(texts))[0]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities [N, P] in input order, columns in `self.policies` order."""
        return calibrate(self.logits(texts), self.card)

    def predict(self, texts: Sequence[str], thresholds: Mapping[str, float] | None = None,
                tiers: TierThresholds | None = None) -> list[dict[str, Any]]:
        """Per text: {"scores": {policy: p}, "flags": {policy: p >= threshold}, "actions": {policy: "none" |
        "review" | "remove"}, "truncated": bool}.

        Thresholds and tiers are the card's (a v1 card has no tiers: every action is "none"); `thresholds`
        overrides flag thresholds by policy name, `tiers` tier thresholds by policy and tier (None = off).
        """
        limits, tier_limits = self.thresholds(thresholds), self.tiers(tiers)
        logits, truncated = self._score(_check_texts(texts))
        probs = calibrate(logits, self.card)
        out = []
        for row, cut in zip(probs, truncated):
            scores = {p: float(row[j]) for j, p in enumerate(self.policies)}
            flags, actions = decide(scores, limits, tier_limits)
            out.append({"scores": scores, "flags": flags, "actions": actions, "truncated": bool(cut)})
        return out

    def thresholds(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """The card's thresholds with `overrides` applied (validated: known policies, values in [0, 1])."""
        limits = dict(self.card.thresholds)
        for name, value in (overrides or {}).items():
            if name not in limits:
                raise ValueError(f"thresholds[{name!r}]: unknown policy; policies are {self.policies}")
            if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"thresholds[{name!r}] = {value!r}: expected a number in [0, 1]")
            limits[name] = float(value)
        return limits

    def tiers(self, overrides: TierThresholds | None = None) -> dict[str, dict[str, float | None]]:
        """The card's tier thresholds with `overrides` applied ({policy: {tier: number in [0, 1] or None}})."""
        limits = self.card.tier_thresholds
        for name, tiers in (overrides or {}).items():
            if name not in limits:
                raise ValueError(f"tiers[{name!r}]: unknown policy; policies are {self.policies}")
            for tier, value in tiers.items():
                if tier not in TIERS:
                    raise ValueError(f"tiers[{name!r}][{tier!r}]: unknown tier; tiers are {TIERS}")
                if value is not None and (isinstance(value, bool) or not isinstance(value, Real)
                                          or not 0.0 <= value <= 1.0):
                    raise ValueError(f"tiers[{name!r}][{tier!r}] = {value!r}: expected a number in [0, 1] or None")
                limits[name][tier] = None if value is None else float(value)
        return limits

    def _score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits [N, P] float32, truncated [N] bool), both in input order."""
        n, n_policies = len(texts), len(self.policies)
        logits = np.zeros((n, n_policies), dtype=np.float32)
        if n == 0:
            return logits, np.zeros(0, dtype=bool)
        features, truncated = self._encode([normalize_tweet(t) for t in texts])
        lengths = [len(f["input_ids"]) for f in features]
        with torch.inference_mode():
            for idx in length_batches(lengths, self.batch_size):
                batch = self.tokenizer.pad([features[i] for i in idx], padding="longest", return_tensors="pt")
                logits[idx] = self._forward(batch)
        return logits, truncated

    def _forward(self, batch: Mapping[str, torch.Tensor]) -> np.ndarray:
        """One padded batch -> logits [B, P] float32, by this predictor's path (`serving.fastpath`)."""
        return self.forward(batch)

    def _encode(self, texts: list[str]) -> tuple[list[dict[str, list[int]]], np.ndarray]:
        """Token ids per text, truncated to max_length, and whether truncation cut anything."""
        enc = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, return_overflowing_tokens=True, padding=False
        )
        # With overflow, each text yields its head window first, then one row per overflow window.
        sample = enc["overflow_to_sample_mapping"]
        keys = [k for k in enc.keys() if k != "overflow_to_sample_mapping"]
        features: list[dict[str, list[int]]] = [{} for _ in texts]
        truncated = np.zeros(len(texts), dtype=bool)
        seen = np.zeros(len(texts), dtype=bool)
        for row, i in enumerate(sample):
            if seen[i]:
                truncated[i] = True
                continue
            seen[i] = True
            features[i] = {k: enc[k][row] for k in keys}
        return features, truncated


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches of text indices, longest first, each padded to its first text's length.

    A batch closes at `batch_size` texts or when the next text is shorter than its first by more than
    `PAD_SLACK` (tokens, share of the first's length). Sorting alone leaves one call of 32 tweets with random
    lengths (a request, or requests merged by the service) padded to its longest, ~2.5x the useful tokens on
    the shared test tweets. Longest first also makes a too-large batch fail at once.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    tokens, share = PAD_SLACK
    batches: list[list[int]] = []
    for i in order:
        longest = lengths[batches[-1][0]] if batches else 0
        if not batches or len(batches[-1]) == batch_size or longest - lengths[i] > max(tokens, share * longest):
            batches.append([])
        batches[-1].append(i)
    return batches


def _quantized_path(card: PolicyCard, requested: str, model_dir: Path) -> str:
    """A quantized model runs its graph under ONNX Runtime: `requested` "auto" and "onnxruntime" mean that; the
    torch paths would score the fp32 weights it was made from, which are not this model (nor what its card was fit
    on)."""
    q = card.quantization
    if requested not in (fastpath.AUTO, "onnxruntime"):
        why = f"path={requested!r} would score the fp32 weights of {q.source}, not this model; use auto or " \
              "onnxruntime"
    elif fastpath.resolve_path(fastpath.AUTO) != "onnxruntime":
        why = "onnxruntime is not installed"
    elif not (model_dir / q.graph).is_file():
        why = "that file is missing"
    else:
        return "onnxruntime"
    raise ArtifactError(f"{model_dir}: a {q.method} model scores through its graph {q.graph} under ONNX Runtime: "
                        f"{why}")


def read_model_config(model_dir: str | Path) -> PretrainedConfig:
    """The artifact's config.json as a generic config: any model type, ours (`tweetguard_bert`) included, without
    importing the modeling code (slow) or asking about remote code."""
    config_dict, _ = PretrainedConfig.get_config_dict(str(model_dir))
    return PretrainedConfig.from_dict(config_dict)


def _check_model(config: PretrainedConfig, card: PolicyCard, model_dir: Path) -> None:
    """The weights' label layout and position range must agree with the card, or scores land on wrong policies."""
    names = tuple(p.name for p in card.policies)
    labels = tuple(config.id2label[i] for i in range(config.num_labels)) if config.id2label else ()
    if config.num_labels != len(names) or labels != names:
        raise ArtifactError(
            f"{model_dir}/config.json: id2label {labels} (num_labels={config.num_labels}) does not match "
            f"the policy card's policies {names}"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and card.max_length > positions:
        raise ArtifactError(
            f"{model_dir}: policy card max_length={card.max_length} exceeds the model's "
            f"max_position_embeddings={positions}"
        )
