"""Fast paths that were measured and rejected (not in `serving.fastpath.PATHS`), kept runnable so the reason
stays checkable: `benchmarks.inference --candidates` times them and reports their agreement and batch
dependence beside the shipped paths.

- ``ort-int8``:   ONNX Runtime dynamic int8 (per-channel weights) of the onnxruntime path's fused graph;
- ``torch-int8``: `torch.ao.quantization.quantize_dynamic` over the Linear layers.

Both quantize activations with one scale per tensor, computed on the padded batch at run time, so a text's
score depends on its batch-mates; both also move probabilities far beyond the 0.02 agreement bound on a
fine-tuned model.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

from serving.fastpath import onnx_file, onnx_forward, torch_forward


def candidate_predictors(reference, *, threads: int, cache_dir: Path | None) -> dict:
    """name -> a copy of the reference Predictor whose `forward` is the candidate's."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from serving.modeling import load_model

    names = list(reference.tokenizer.model_input_names)
    fp32 = onnx_file(reference.model_dir, names, cache_dir)
    int8 = Path(tempfile.mkdtemp(prefix="tg-int8-")) / "model.int8.onnx"
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": 1})  # 1 = FLOAT, for the fused ops' outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        tq = torch.ao.quantization.quantize_dynamic(load_model(reference.model_dir), {torch.nn.Linear},
                                                    dtype=torch.qint8)
    out = {}
    for name, forward in (("ort-int8", onnx_forward(int8, names, threads)), ("torch-int8", torch_forward(tq))):
        out[name] = copy.copy(reference)
        out[name].forward = forward
    return out
