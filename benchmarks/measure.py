"""Measurement helpers for `benchmarks.inference`: the test tweets, token statistics, timers, the machine's
matmul peak, FLOPs per text, process-tree RSS and agreement with the reference path."""

from __future__ import annotations

import os
import platform
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

TWEET_SOURCES = ("olid", "solid_test_2020", "tweeteval_hate")  # the shared tweet test sets


def shared_test_tweets(n: int, *, root: str | Path, sources_file: str | Path, seed: int = 0,
                sources: Sequence[str] = TWEET_SOURCES) -> tuple[list[str], dict[str, int]]:
    """`n` distinct tweets (by the data layer's text key) from the official test files, seeded shuffle."""
    from training.data.readers import read_source
    from training.data.sources import load_sources, text_key

    specs = {s.name: s for s in load_sources(sources_file)}
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for name in sources:
        for row in read_source(specs[name], Path(root)).rows:
            key = text_key(row.text)
            if row.split == "test" and key and key not in seen:
                seen.add(key)
                rows.append((name, row.text))
    if len(rows) < n:
        raise ValueError(f"asked for {n} texts, the test files of {list(sources)} hold {len(rows)} distinct ones")
    random.Random(seed).shuffle(rows)
    rows = rows[:n]
    counts = {name: sum(1 for s, _ in rows if s == name) for name in sources}
    return [t for _, t in rows], counts


def token_lengths(predictor, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens per text as the Predictor feeds them (normalized, truncated to max_length), and truncation."""
    from serving.preprocess import normalize_tweet

    features, truncated = predictor._encode([normalize_tweet(t) for t in texts])
    return np.array([len(f["input_ids"]) for f in features]), truncated


def distribution(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p95": float(np.percentile(v, 95)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def padded_tokens(lengths: np.ndarray, batches: list[list[int]]) -> int:
    """Token positions computed when each batch is padded to its longest text."""
    return int(sum(lengths[b].max() * len(b) for b in batches))


def throughput(score: Callable[[list[str]], object], texts: list[str]) -> float:
    """Texts per second of one call over all `texts` (the callable batches them itself)."""
    t0 = time.perf_counter()
    score(texts)
    return len(texts) / (time.perf_counter() - t0)


def latencies_ms(score: Callable[[list[str]], object], texts: Sequence[str]) -> list[float]:
    """One call per text (a batch of one), in milliseconds."""
    out = []
    for text in texts:
        t0 = time.perf_counter()
        score([text])
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def quantiles(ms: Sequence[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


# ---- the machine -------------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    from serving.fastpath import native_bf16

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    cores, ghz = os.cpu_count() or 1, float(info.get("cpu MHz", "nan")) / 1e3
    # Nominal fp32 FMA peak: two 256-bit FMA units per core on AVX2 x86 (16 multiply-adds per cycle).
    flop_per_cycle = 64 if capability.startswith("AVX512") else 32
    return {"cpu": info.get("model name", platform.processor()), "cores": cores, "ghz": ghz,
            "nominal_fp32_gflops": cores * flop_per_cycle * ghz, "torch_capability": capability,
            "native_bf16": native_bf16(), "load_avg": list(os.getloadavg())}


def matmul_gflops(threads: int, size: int = 2048, seconds: float = 1.0) -> float:
    """Measured fp32 GEMM rate (GFLOP/s) with `threads` torch threads: the ceiling for these fp32 models."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    runs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or runs < 2:
        torch.matmul(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - t0) / 1e9


def flops_per_text(config, tokens: np.ndarray) -> np.ndarray:
    """Encoder FLOPs (multiply-add = 2) per text of `tokens` positions: projections, FFN and attention."""
    h, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    t = tokens.astype(float)
    per_layer = 2 * t * (4 * h * h + 2 * h * ffn) + 2 * 2 * t * t * h  # QKVO + FFN, then QK^T and AV
    return layers * per_layer


# ---- memory ------------------------------------------------------------------------------------------------
def _tree(pid: int, read) -> dict[int, float]:
    """`read(process)` for `pid` and all its descendants (those that exit meanwhile are left out)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for p in procs:
        try:
            out[p.pid] = read(p)
        except psutil.NoSuchProcess:
            pass
    return out


def tree_rss_mb(pid: int) -> dict[int, float]:
    """RSS (MB) of `pid` and all its descendants."""
    return _tree(pid, lambda p: p.memory_info().rss / 2**20)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and all its descendants so far."""
    return sum(_tree(pid, lambda p: p.cpu_times().user + p.cpu_times().system).values())


class PeakRSS:
    """Samples a process tree's total RSS in a thread until stopped; keeps the peak and its split."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s = pid, every_s
        self.peak_mb, self.at_peak = 0.0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            sample = tree_rss_mb(self.pid)
            if sum(sample.values()) > self.peak_mb:
                self.peak_mb, self.at_peak = sum(sample.values()), sample
            if self._stop.wait(self.every_s):
                return


# ---- agreement ---------------------------------------------------------------------------------------------
def agreement(reference: np.ndarray, other: np.ndarray, thresholds: Sequence[float]) -> dict:
    """max |Δp| and the share of (text, policy) flags that flip at the card's thresholds."""
    t = np.asarray(thresholds)
    flips = (reference >= t) != (other >= t)
    return {"max_abs_dp": float(np.abs(reference - other).max()), "flip_share": float(flips.mean()),
            "flips": int(flips.sum()), "flags": int(flips.size)}


def batch_dependence(predictor, texts: Sequence[str]) -> float:
    """max |Δp| between each text scored alone and scored among `texts` (length-sorted, padded batches)."""
    mixed = predictor.predict_proba(list(texts))
    alone = np.stack([predictor.predict_proba([t])[0] for t in texts])
    return float(np.abs(mixed - alone).max())


def write_report(out: str | Path, name: str, report: dict, text: str) -> Path:
    """A benchmark's `<name>.json` and `<name>.md` in `out` (created); the markdown is printed too."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)
    return out
