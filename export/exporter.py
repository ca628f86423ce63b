"""Checkpoint or CharRNN -> model file of the contract, optionally int8-quantized."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import onnx

from edge_rnn import spec as S
from edge_rnn.errors import ModelFileError, SettingsError
from edge_rnn.graph import build_model
from edge_rnn.modelfile import set_metadata, write_model
from edge_rnn.vocab import Vocabulary
from edge_rnn.export.weights import onnx_weights


def export_model(model, vocab: Vocabulary, path: str | Path, training: dict | None = None) -> Path:
    """Write `model` (an edge_rnn.export.model.CharRNN) as an ONNX model file, atomically."""
    proto = build_model(model.spec, onnx_weights(model), vocab, training)
    return write_model(proto, path)


def export_checkpoint(checkpoint: str | Path, path: str | Path, int8: bool = False) -> Path:
    """Export a training checkpoint; with `int8`, apply onnxruntime's dynamic quantization."""
    from edge_rnn.export.train import model_from_checkpoint  # optional: torch (the `train` extra); export_model needs none

    model, vocab, info = model_from_checkpoint(checkpoint)
    training = {k: v for k, v in info.items() if k != "history"}
    out = export_model(model, vocab, path)
    proto = onnx.load(str(out))
    set_metadata(proto, {S.KEY_TRAINING: json.dumps(training)})
    write_model(proto, out)
    return quantize_int8(out, out) if int8 else out


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime dynamic int8 quantization (weights int8, activations quantized on the fly).

    The quantized graph uses onnxruntime's contrib ops, so it runs on the onnxruntime
    backend; the numpy runtime reads float models. Metadata is carried over.
    """
    try:  # optional: onnxruntime (the `ort` extra; `train` brings it too)
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SettingsError("int8 quantization needs onnxruntime: pip install 'edge-rnn[ort]'") from None

    src_proto = onnx.load(str(src))
    with tempfile.TemporaryDirectory() as tmp:
        pre, tmp_out = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        try:
            # onnxruntime's recommended pre-processing (shape inference, graph optimisation);
            # without it quantize_dynamic warns on every export. Symbolic shape inference
            # is for transformers and adds nothing to an RNN graph.
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_dynamic(str(pre), str(tmp_out), weight_type=QuantType.QInt8)
        except Exception as exc:
            raise ModelFileError(f"int8 quantization of {src} failed ({exc}); export without --int8") from None
        proto = onnx.load(str(tmp_out))
    set_metadata(proto, {p.key: p.value for p in src_proto.metadata_props})
    set_metadata(proto, {S.KEY_QUANT: "int8-dynamic"})
    return write_model(proto, dst)
