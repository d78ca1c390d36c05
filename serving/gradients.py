"""Integrated-gradients reasons (offline): Captum's LayerIntegratedGradients on the word embeddings.

Called through `serving.reasons.explain(..., method="integrated_gradients")`, never by the service (it needs the
torch model and gradients). Each word of the text as sent is normalized on its own and tokenized, so every
sub-word piece belongs to exactly one word (the pieces of a word roll up by summing); the input is those pieces
in order between [CLS] and [SEP], cut at the model window like the served text. The baseline keeps [CLS] / [SEP]
and puts [PAD] everywhere else. Attributions are computed on the raw logit and carried to the calibrated score
by one factor per text and policy, (p(x) − p(baseline)) / (logit(x) − logit(baseline)), with the card's own
calibration (`serving.artifact.calibrate`): so the words' contributions add up (up to the integral's error) to
the calibrated score's difference from the baseline's, as occlusion's are differences of calibrated scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from serving.artifact import calibrate
from serving.policies import POLICIES
from serving.preprocess import normalize_tweet
from serving.reasons import Reasons, Word, rank, split_words

STEPS = 32  # Riemann steps of the path integral (Captum's default is 50; 32 keeps a CPU call short)


def word_pieces(words: list[Word], tokenizer, max_length: int) -> tuple[list[int], list[int], int]:
    """(input ids with [CLS] / [SEP], the word index of each id (-1 for special tokens), words inside)."""
    ids, owner, budget = [tokenizer.cls_token_id], [-1], max_length - 2
    n_inside = 0
    for i, w in enumerate(words):
        piece = tokenizer(normalize_tweet(w.word), add_special_tokens=False)["input_ids"]
        if len(ids) - 1 + len(piece) > budget:
            break
        ids += piece
        owner += [i] * len(piece)
        n_inside = i + 1
    return ids + [tokenizer.sep_token_id], owner + [-1], n_inside


def integrated_gradients_reasons(predictor, texts: list[str], *, top_k: int = 5,
                                 policies: Sequence[str] | None = None) -> list[Reasons]:
    """Reasons by integrated gradients for `policies` (default all; the others' lists stay empty: each policy is
    one attribution pass)."""
    from captum.attr import LayerIntegratedGradients

    from serving.modeling import load_model

    if predictor.model_dir is None:
        raise ValueError("integrated_gradients needs the model's directory (a Predictor made by Predictor.load)")
    if predictor.card.quantization is not None:
        raise ValueError("integrated_gradients needs float weights; this model is a quantized graph: use occlusion")
    model, tok = load_model(predictor.model_dir), predictor.tokenizer

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for text in texts:
        words = split_words(text)
        ids, owner, n_inside = word_pieces(words, tok, predictor.max_length)
        x = torch.tensor([ids])
        base = torch.tensor([[t if o < 0 else tok.pad_token_id for t, o in zip(ids, owner)]])
        mask = torch.ones_like(x)
        with torch.no_grad():
            logits = torch.cat([forward(x, mask), forward(base, mask)]).double().numpy()  # [2, P]
        probs = calibrate(logits, predictor.card)
        contributions = np.zeros((n_inside, len(POLICIES)))
        for j in [POLICIES.index(p) for p in (policies or POLICIES)]:
            attr = lig.attribute(x, baselines=base, additional_forward_args=(mask,), target=j, n_steps=STEPS)
            per_token = attr.sum(-1)[0].detach().double().numpy()
            d_logit = logits[0, j] - logits[1, j]
            scale = (probs[0, j] - probs[1, j]) / d_logit if abs(d_logit) > 1e-12 else 0.0
            for t, o in enumerate(owner):
                if o >= 0:
                    contributions[o, j] += per_token[t] * scale
        ranked = rank(words[:n_inside], contributions, top_k)
        out.append(Reasons("integrated_gradients", dict(zip(POLICIES, map(float, probs[0]))),
                           {p: ranked[p] if p in (policies or POLICIES) else [] for p in POLICIES},
                           [{"word": w.word, "start": w.start, "end": w.end} for w in words[n_inside:]]))
    return out
