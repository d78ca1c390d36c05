"""Per-(source, policy) label-semantics terms, used only inside the training loss (`train.source_terms`).

Every corpus labels its own notion of a policy (Davidson's "offensive", OLID's OFF, AbuseEval's abuse,
HatEval's hate, ...): a base rate of its own, and a broader or sharper boundary. The model's logit z[p] is
meant to carry *our* policy; in the loss, the row of source s is scored with

    offset:  z[p] + b[s, p]                  (b absorbs the source's base rate)
    affine:  z[p] * exp(a[s, p]) + b[s, p]   (exp(a) also absorbs how broad or sharp its notion is)

so what is only one corpus's habit need not be learnt by the shared model.

Where they live: a `SourceTerms` module owned by `training.fit.loop.TrainingLoop`, never inside the Hugging Face
model. They are not saved into the run's weights (best/, last/) or the artifact, and the served model takes no
source input. Validation during training (`training.fit.validation`), calibration, thresholds, `evaluate` and
serving all use the plain logits z, without any term.

Identifiability: for each policy the terms are centred over the sources that label it, weighted by each
source's expected share of that policy's known labels in the loss (label counts in train, times the
`train.source_balance` sampling factor size^-alpha): the loss-weighted mean term is 0, so the shared logit keeps
the pooled base rate (and sharpness) and a term carries only its source's deviation from it. A policy labelled
by one source gets no term. A small L2 (`train.source_terms_l2`) on the raw parameters keeps them finite (a
source that labels everything positive would push its offset to infinity) and pins down the direction the
centring removes.

Training: the parameters are optimized with the model (same AdamW and schedule, their own parameter group: learning
rate `train.source_terms_lr`, no weight decay), saved in every checkpoint and restored on --resume, and under
torchrun their gradients are all-reduced with the model's (`training.fit.distributed.World.average_gradients`).
At the end of training the learned terms are written to the run dir as `source_terms.json`
({source: {policy: {offset, scale}}}, labelled pairs only, rounded) and logged to the MLflow run as an artifact.
The terms of the best validation step, the step whose weights become the artifact, are written exactly beside them
at every improvement, `source_terms_best.json` (logged too): a run started from that model (`train.init_from`,
training.fit.init_from) starts its terms there (`load_saved`), for the (source, policy) pairs both runs label.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SOURCE_TERMS_FILE = "source_terms.json"
BEST_SOURCE_TERMS_FILE = "source_terms_best.json"  # exact terms of the kept step (train.keep: the artifact's weights)


class SourceTerms(nn.Module):
    """b[s, p] (offset) and, for mode affine, a[s, p] (log-scale), zero-initialised (the identity)."""

    def __init__(self, sources: list[str], labels: np.ndarray, policies: list[str], mode: str, *,
                 l2: float = 0.0, alpha: float = 0.0):
        super().__init__()
        if mode not in ("offset", "affine"):
            raise ValueError(f"source terms mode {mode!r}: expected 'offset' or 'affine'")
        self.mode, self.l2, self.policies = mode, float(l2), list(policies)
        self.names = sorted(set(sources))  # index = position in this list; from the train split, once
        self._index = {s: i for i, s in enumerate(self.names)}
        rows = self.index_of(sources)
        n_sources, n_policies = len(self.names), labels.shape[1]
        if n_policies != len(self.policies):
            raise ValueError(f"labels have {n_policies} policies, expected {len(self.policies)}")
        known = np.zeros((n_sources, n_policies), dtype=np.float64)
        np.add.at(known, rows, (labels >= 0).astype(np.float64))
        size = np.bincount(rows, minlength=n_sources).astype(np.float64)
        share = known * np.maximum(size, 1.0)[:, None] ** -float(alpha)  # expected share in the loss
        weights = share / np.maximum(share.sum(axis=0, keepdims=True), 1e-300)  # [S, P], columns sum to 1 or 0
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.register_buffer("labelled", torch.tensor(known > 0))
        self.offset = nn.Parameter(torch.zeros(n_sources, n_policies))
        self.log_scale = nn.Parameter(torch.zeros(n_sources, n_policies)) if mode == "affine" else None

    def index_of(self, sources: list[str]) -> np.ndarray:
        """Row index of each source name (int64 [N]); a name not seen in train is an error."""
        try:
            return np.fromiter((self._index[s] for s in sources), dtype=np.int64, count=len(sources))
        except KeyError as e:
            raise KeyError(f"source {e.args[0]!r} has no term (sources from train: {self.names})") from None

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - (self.weights * x).sum(dim=0, keepdim=True)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The terms the loss uses: (offset b [S, P], log-scale a [S, P] or None), centred per policy."""
        return self._centred(self.offset), None if self.log_scale is None else self._centred(self.log_scale)

    def forward(self, logits: torch.Tensor, source_ids: torch.Tensor) -> torch.Tensor:
        """Source-adjusted logits [B, P] (float32) for the loss; `source_ids` [B] from `index_of`."""
        b, a = self.effective()
        z = logits.float()
        if a is not None:
            z = z * torch.exp(a[source_ids])
        return z + b[source_ids]

    def penalty(self) -> torch.Tensor:
        """l2 * (sum b^2 + sum a^2) over the raw parameters: added once per optimizer step."""
        return self.l2 * sum(p.pow(2).sum() for p in self.parameters())

    # -- checkpoints and the end-of-training report ------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {"sources": self.names, "policies": self.policies, "mode": self.mode, "state": self.state_dict()}

    def load_checkpoint_state(self, saved: dict[str, Any] | None) -> None:
        if saved is None:
            raise ValueError(f"train.source_terms={self.mode}, but the checkpoint holds no source terms")
        mine = {"sources": self.names, "policies": self.policies, "mode": self.mode}
        theirs = {k: saved[k] for k in mine}
        if theirs != mine:
            raise ValueError(f"the checkpoint's source terms are for {theirs}, this run's for {mine}")
        self.load_state_dict(saved["state"])

    @torch.no_grad()
    def report(self) -> dict[str, dict[str, dict[str, float]]]:
        """{source: {policy: {"offset": b, "scale": exp(a)}}} of the terms in use, for the pairs train labels."""
        b, a = self.effective()
        scale = torch.ones_like(b) if a is None else torch.exp(a)
        out: dict[str, dict[str, dict[str, float]]] = {}
        for i, source in enumerate(self.names):
            row = {p: {"offset": round(float(b[i, j]), 6), "scale": round(float(scale[i, j]), 6)}
                   for j, p in enumerate(self.policies) if bool(self.labelled[i, j])}
            if row:
                out[source] = row
        return out

    def write_report(self, run_dir: Path) -> Path:
        return _write_json(Path(run_dir) / SOURCE_TERMS_FILE, self.report())

    @torch.no_grad()
    def write_best(self, run_dir: Path, step: int) -> Path:
        """The terms in use, unrounded ({source: {policy: {offset, log_scale}}}, labelled pairs), as the terms of
        the best step `step`: what `load_saved` reads back exactly."""
        b, a = self.effective()
        terms: dict[str, dict[str, dict[str, float]]] = {}
        for i, source in enumerate(self.names):
            row = {p: {"offset": float(b[i, j]), "log_scale": 0.0 if a is None else float(a[i, j])}
                   for j, p in enumerate(self.policies) if bool(self.labelled[i, j])}
            if row:
                terms[source] = row
        return _write_json(Path(run_dir) / BEST_SOURCE_TERMS_FILE, {"mode": self.mode, "step": step, "terms": terms})

    @torch.no_grad()
    def load_saved(self, saved: dict[str, Any]) -> dict[str, list[str]]:
        """Start from another run's terms (`write_best`'s file, or the rounded `source_terms.json` report): for each
        (source, policy) pair this run labels and `saved` has, the parameters take the saved (centred) values, so on
        the same mix the terms in use are the saved ones; every other pair stays at the identity (0), as in any run.
        Mode offset takes the offsets only. Returns {"loaded": [source, ...], "new": [...], "unused": [...]}."""
        terms = saved["terms"] if "mode" in saved and "terms" in saved else saved
        loaded = set()
        for i, source in enumerate(self.names):
            for j, policy in enumerate(self.policies):
                pair = terms.get(source, {}).get(policy)
                if pair is None or not bool(self.labelled[i, j]):
                    continue
                self.offset[i, j] = float(pair["offset"])
                if self.log_scale is not None:
                    self.log_scale[i, j] = (float(pair["log_scale"]) if "log_scale" in pair  # the report: rounded
                                            else math.log(max(pair["scale"], 1e-6)))
                loaded.add(source)
        return {"loaded": sorted(loaded), "new": sorted(set(self.names) - loaded),
                "unused": sorted(set(terms) - set(self.names))}


def _write_json(path: Path, payload: Any) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader sees the whole file or none
    return path


def make_source_terms(cfg, sources: list[str], labels: np.ndarray, policies: list[str]) -> SourceTerms | None:
    """The terms `train.source_terms` asks for over the train split's sources; None for "none"."""
    if cfg.source_terms == "none":
        return None
    return SourceTerms(sources, labels, policies, cfg.source_terms, l2=cfg.source_terms_l2,
                       alpha=cfg.source_balance)
