"""The numeric paths behind `serving.predictor.Predictor`: each turns one padded batch into logits [B, P] float32.

- ``reference``    eager fp32 torch: the definition of the model's scores.
- ``onnxruntime``  the same fp32 graph, exported once to ONNX with eager attention, fused by ONNX Runtime's
                   BERT optimizer (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) and run
                   by ONNX Runtime. Agrees with reference to ~1e-6 and has no Python per layer, so one tweet
                   costs a fraction of reference's latency. The export is cached outside the model directory
                   (a registered artifact's files never change), keyed by the model files' hash and versions.
- ``bf16``         bfloat16 autocast. Pays only on CPUs with native bf16 matmuls (AMX / AVX512-BF16); elsewhere
                   it is emulated and several times slower than fp32 (`torch_forward` warns).

``auto`` (the service default) is the fastest path that agrees with reference on every CPU: ``onnxruntime`` when
it is installed, else ``reference``. It never picks bf16: bf16 moves scores by up to ~0.01 and makes a text's score
depend on its batch-mates (~2e-3), so served scores would stop matching offline evaluation scores (tested to
1e-5). Measured on a 2-core Intel Xeon with AMX (`benchmarks.inference`, docs/performance.md): bf16 1.70x onnxruntime's batch
throughput but 2.9x its one-text latency, so on AMX hosts it is an opt-in for bulk offline scoring only.

A quantized model (policy card v3, `tweetguard quantize`) is its own model: its scores are the static int8 graph
it carries (fixed activation scales, so a text's score does not depend on its batch-mates), run by ONNX Runtime
through `onnx_forward`; the Predictor loads that graph instead of exporting one.

Measured and rejected (`benchmarks/inference.py --candidates` reruns them): dynamic int8, in ONNX Runtime and
torch, moved probabilities by up to 0.3-0.5 and flipped 1-5% of flags on a fine-tuned model, and its
per-tensor activation scales make a text's score depend on its batch-mates; torch.compile took ~50 s to
compile at load for no gain on a 2-core AVX2 CPU.

This module imports only the standard library at import time (serving.schemas validates path names with it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("tweetguard.fastpath")

PATHS: tuple[str, ...] = ("reference", "onnxruntime", "bf16")
AUTO = "auto"
EXPORT_VERSION = "1"  # bump when the exported graph changes for the same model files
ONNX_FILE = "model.onnx"
CACHE_ENV = "TWEETGUARD_CACHE_DIR"

Forward = Callable[[Mapping[str, Any]], Any]  # padded batch of torch tensors -> logits np.ndarray [B, P]


def native_bf16() -> bool | None:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16), from /proc/cpuinfo (Linux); None when
    unknown (no /proc/cpuinfo), which callers treat as "not known to be native"."""
    try:
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        ).split()
    except OSError:
        return None
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_path(path: str) -> str:
    """``auto`` -> the fastest agreeing path available here; any other name is checked and returned."""
    if path == AUTO:
        return "onnxruntime" if importlib.util.find_spec("onnxruntime") else "reference"
    if path not in PATHS:
        raise ValueError(f"path={path!r}: available inference paths are {PATHS} (or {AUTO!r})")
    return path


def torch_forward(model, *, bf16: bool = False) -> Forward:
    """reference (fp32) or bf16 autocast over an eval-mode torch model. Call under torch.inference_mode."""
    import torch

    if bf16 and not native_bf16():
        logger.warning("bf16 on a CPU without AMX/AVX512-BF16 is emulated and slower than fp32")

    def forward(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(**batch).logits.float().numpy()

    return forward


# ---- ONNX Runtime ----------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get(CACHE_ENV) or Path(base) / "tweetguard")


def export_key(model_dir: Path) -> str:
    """Hash of every model file plus the versions that shape the exported graph."""
    h = hashlib.sha256(f"export v{EXPORT_VERSION}".encode())
    for dist in ("torch", "transformers", "onnxruntime", "onnx"):
        h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        h.update(path.name.encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def onnx_file(model_dir: Path, input_names: list[str], cache_dir: str | Path | None = None) -> Path:
    """The fused ONNX graph of the model in `model_dir`, exported on first use into the cache."""
    target = Path(cache_dir or default_cache_dir()) / "onnx" / export_key(model_dir)[:24] / ONNX_FILE
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{ONNX_FILE}.{os.getpid()}")
    try:
        export_onnx(model_dir, input_names, tmp)
        os.replace(tmp, target)  # atomic: a concurrent loader sees no file or a complete one
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported %s to %s", model_dir, target)
    return target


def export_onnx(model_dir: Path, input_names: list[str], out: Path, *, fuse: bool = True) -> None:
    """The model's logits as an ONNX graph at `out` (dynamic batch and sequence axes). `fuse`: ONNX Runtime's BERT
    fusions for the onnxruntime path; False keeps the plain MatMul / Softmax graph that static quantization
    (training.fit.quantize) needs, since the fused Attention op has no int8 kernel taking per-channel weights."""
    import torch
    from onnxruntime.transformers import optimizer
    from transformers import AutoTokenizer, BertConfig

    from serving.modeling import load_model

    model = load_model(model_dir)
    # Eager attention traces to the MatMul/Softmax pattern ORT fuses into one Attention op; SDPA does not.
    model.set_attn_implementation("eager")

    class Logits(torch.nn.Module):  # positional inputs: the TorchScript exporter's calling convention
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(input_names, tensors))).logits

    sample = AutoTokenizer.from_pretrained(model_dir)(["a sample tweet", "hi"], padding=True, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "sequence"} for name in input_names} | {"logits": {0: "batch"}}
    raw = out.with_name(f"{out.name}.raw")  # out is per process (.model.onnx.<pid>): so is its raw export
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about Python-side shape checks, legacy-export notice
            torch.onnx.export(Logits().eval(), tuple(sample[n] for n in input_names), str(raw), dynamo=False,
                              input_names=input_names, output_names=["logits"], dynamic_axes=dynamic,
                              opset_version=17)
        config = model.config
        # The encoder decides the fusion: bert, and our tweetguard_bert head.
        if fuse and isinstance(config, BertConfig):
            fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                                             hidden_size=config.hidden_size)
            fused.save_model_to_file(str(out))
        else:  # unfused, or not BERT: ORT's own session-time fusions still apply
            os.replace(raw, out)
    finally:
        raw.unlink(missing_ok=True)


def onnx_forward(path: Path, input_names: list[str], num_threads: int) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(batch):
        return session.run(["logits"], {name: batch[name].numpy() for name in input_names})[0]

    return forward
