"""The int8 graph of `tweetguard quantize` (the command: training.pipeline.quantize): a registered model as static
int8, its own model in the fast tier.

    tweetguard quantize --model models:/tweetguard-fast@challenger [--config configs/default.yaml] [key=value ...]

Static int8 in ONNX Runtime (QDQ format): the model is exported *unfused* (`serving.fastpath.export_onnx`), and
every MatMul that multiplies by a weight matrix (the encoder's projections and feed-forward layers, 18 of 24 MatMuls
in a 3-layer BERT; attention's activation x activation products stay fp32) gets per-channel symmetric int8 weights
and uint8 activations whose ranges (MinMax) are calibrated once on `quantize.calibration_rows` train texts, batched
by the Predictor exactly as it batches at serving time. Fixed activation scales make a text's score independent of its
batch-mates, which dynamic int8 (scales per padded batch) is not, so served == offline holds.

Quantization moves each text's probability (measured on the 3-layer student: mean |dp| ~0.03), so the result is a
new model, not a numeric path of the old one: a new artifact directory (the source's files, the graph
`model.int8.onnx`, and a policy card v3 whose `quantization` names the graph), calibrated, thresholded and tiered
on validation by the same finish as training (training.registry.finish), logged as its own MLflow run and registered under
`distill.registered_model` (the fast tier; never @champion: `tweetguard promote` refuses it like a student). The
Predictor, evaluation, `tweetguard package` and the service load it like any model (`serving.predictor`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

KIND = "quantized"
GRAPH_FILE = "model.int8.onnx"
SOURCE_REF_TAG, SOURCE_VERSION_TAG = "quantized_from.ref", "quantized_from.version"
BATCH_CHECK_ROWS = 64  # validation texts scored alone and together: the batch-mate independence check


def calibration_batches(predictor, texts: list[str]) -> list[dict[str, np.ndarray]]:
    """The padded batches (model inputs as numpy) `predictor` builds for `texts`: its normalization, truncation and
    length batching, without running the model."""
    from serving.predictor import Predictor

    names = list(predictor.tokenizer.model_input_names)
    captured: list[dict[str, np.ndarray]] = []

    def capture(batch):
        captured.append({n: batch[n].numpy() for n in names})
        return np.zeros((len(batch[names[0]]), len(predictor.policies)), dtype=np.float32)

    Predictor(capture, predictor.tokenizer, predictor.card, batch_size=predictor.batch_size).logits(texts)
    return captured


def build_int8(model_dir: Path, input_names: list[str], batches: list[dict[str, np.ndarray]], out: Path) -> str:
    """Write the static int8 graph of the model in `model_dir` to `out`; returns what was quantized, in words."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from serving.fastpath import export_onnx

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="tgquant-") as tmp:
        raw, pre = Path(tmp) / "raw.onnx", Path(tmp) / "pre.onnx"
        export_onnx(model_dir, input_names, raw, fuse=False)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        weights = {w.name for w in graph.initializer}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        chosen = [n.name for n in matmuls if any(x in weights for x in n.input)]
        tmp_out = out.with_name(f".{out.name}.tmp")
        quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=chosen, extra_options={"WeightSymmetric": True})
        tmp_out.replace(out)
    return (f"ONNX Runtime quantize_static, QDQ: {len(chosen)} of {len(matmuls)} MatMuls (those with a weight) "
            "with per-channel symmetric int8 weights and uint8 activations (MinMax ranges); everything else fp32")
