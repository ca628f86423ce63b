"""Reading and writing model files of the contract (torch-free).

A model file is an ONNX graph plus `metadata_props` (see edge_rnn.spec). `read_model`
checks both and turns every way a file can be wrong into a ModelFileError that says
what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import onnx

from edge_rnn import spec as S
from edge_rnn.atomic import atomic_write
from edge_rnn.bundle import is_bundle, unpack
from edge_rnn.errors import ModelFileError
from edge_rnn.graph import graph_linear_before_reset
from edge_rnn.spec import ModelSpec
from edge_rnn.vocab import Vocabulary

DEFAULT_MODEL_NAME = "default.onnx"


def shipped_models() -> dict[str, Path]:
    """{name: path} of the models shipped in edge_rnn/models ("default", "shakespeare", ...)."""
    root = Path(str(resources.files("edge_rnn") / "models"))
    return {p.stem: p for p in sorted(root.glob("*.onnx"))}


def default_model_path() -> Path:
    path = Path(str(resources.files("edge_rnn") / "models" / DEFAULT_MODEL_NAME))
    if not path.exists():
        raise ModelFileError(
            f"the shipped default model {path} is missing; reinstall edge-rnn or pass a model file"
        )
    return path


def resolve_model(model: str | Path | None) -> Path:
    """A model file path from a path, a shipped model's name, or None (the default model).

    A path that exists wins over a shipped name; a bare word (no folder, no suffix) that is
    neither is taken as a misspelt name, and the error lists the shipped models. A model bundle
    (a .zip: edge_rnn.bundle) gives the model file unpacked from it."""
    if model is None:
        return default_model_path()
    path = Path(model)
    if path.exists() or isinstance(model, Path) or path.suffix or len(path.parts) != 1:
        return unpack(path) if is_bundle(path) else path
    shipped = shipped_models()
    if str(model) in shipped:
        return shipped[str(model)]
    raise ModelFileError(
        f"no model file or shipped model named {str(model)!r}; shipped models: {', '.join(shipped) or 'none'} "
        "(see `edge-rnn models`), or pass a path to an .onnx file"
    )


@dataclass
class ModelFile:
    """A loaded model file: the ONNX proto and what its metadata says."""

    proto: onnx.ModelProto
    spec: ModelSpec
    vocab: Vocabulary
    path: Path | None = None
    training: dict = field(default_factory=dict)
    adaptation: list = field(default_factory=list)
    quantization: str | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {p.key: p.value for p in self.proto.metadata_props}

    def sha256(self) -> str:
        return hashlib.sha256(self.proto.SerializeToString()).hexdigest()


def load_proto(path: str | Path | None) -> tuple[onnx.ModelProto, Path]:
    path = resolve_model(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; check the path or omit it to use the default model")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; pass an .onnx model file")
    data = path.read_bytes()
    if not data:
        raise ModelFileError(f"model file {path} is empty; re-export it with `edge-rnn export`")
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelFileError(
            f"{path} is not a readable ONNX file ({type(exc).__name__}); it may be truncated: re-export it with `edge-rnn export`"
        ) from None
    if not proto.graph.node:
        raise ModelFileError(f"{path} has no graph nodes: it is not an ONNX model (or it is truncated); re-export it")
    inline_external_data(proto, path)
    return proto, path


def parse_metadata(proto: onnx.ModelProto, path: Path | None = None) -> ModelFile:
    """ModelFile from a proto that carries edge-rnn metadata, or a ModelFileError."""
    meta = {p.key: p.value for p in proto.metadata_props}
    where = f"{path}" if path else "model"
    if S.KEY_SPEC not in meta or S.KEY_VOCAB not in meta:
        raise ModelFileError(
            f"{where} has no edge-rnn metadata ({S.KEY_SPEC}, {S.KEY_VOCAB}); export it with `edge-rnn export`, "
            "or load a foreign RNN language model with edge_rnn.load(path, vocab=...)"
        )
    if meta.get(S.KEY_FORMAT) != S.FORMAT_VERSION:
        raise ModelFileError(
            f"{where} has format version {meta.get(S.KEY_FORMAT)!r}, this edge-rnn reads {S.FORMAT_VERSION!r}; "
            "re-export it with this version"
        )
    spec = ModelSpec.from_json(meta[S.KEY_SPEC], graph_linear_before_reset(proto))
    vocab = Vocabulary.from_json(meta[S.KEY_VOCAB])
    if len(vocab) != spec.vocab_size:
        raise ModelFileError(
            f"{where}: vocabulary has {len(vocab)} symbols but the spec says vocab_size={spec.vocab_size}; "
            "the metadata was edited or is corrupt: re-export the model"
        )
    check_contract(proto, spec, where)
    return ModelFile(
        proto=proto,
        spec=spec,
        vocab=vocab,
        path=path,
        training=_json_or(meta.get(S.KEY_TRAINING), {}, where, S.KEY_TRAINING),
        adaptation=_json_or(meta.get(S.KEY_ADAPTATION), [], where, S.KEY_ADAPTATION),
        quantization=meta.get(S.KEY_QUANT),
    )


def read_model(path: str | Path | None = None) -> ModelFile:
    """Load and check a model file (a path or a shipped model's name); None means the shipped default model."""
    proto, path = load_proto(path)
    return parse_metadata(proto, path)


def _json_or(text: str | None, default, where: str, key: str):
    if text is None:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        raise ModelFileError(f"{where}: metadata {key!r} is not JSON; re-export the model") from None
    if not isinstance(value, type(default)) or (isinstance(value, list) and not all(isinstance(v, dict) for v in value)):
        shape = "a JSON object" if isinstance(default, dict) else "a JSON list of objects"
        raise ModelFileError(f"{where}: metadata {key!r} must be {shape}; the metadata was edited or is corrupt: re-export the model")
    return value


def check_contract(proto: onnx.ModelProto, spec: ModelSpec, where: str = "model") -> None:
    """Graph inputs/outputs must be the contract's names in the contract's order."""
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    outputs = [o.name for o in proto.graph.output]
    want_in = [S.TOKENS, *spec.state_names]
    want_out = [S.LOGITS, *spec.new_state_names]
    if inputs != want_in or outputs != want_out:
        raise ModelFileError(
            f"{where} does not follow the model-file contract: inputs {inputs} / outputs {outputs}, "
            f"expected {want_in} / {want_out}; re-export it with `edge-rnn export`"
        )


def set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    """Set (replace) metadata_props keys in place."""
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for p in kept:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)


def write_model(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically: a crash mid-save leaves the previous file intact."""
    data = proto.SerializeToString()
    return atomic_write(path, lambda f: f.write(data))


# --- external data: tensors stored in files beside the model ------------------------------
def inline_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Read every tensor stored as external data into the proto, from files inside the model
    file's own folder only. onnx resolves a relative location against the process's current
    folder (`cd B && edge-rnn eval ../A/model.onnx` read B's file), and a model file is
    untrusted: an absolute location, `..` or a symlink must not reach other files."""
    root = path.resolve().parent
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        where = f"{path}: tensor {tensor.name!r} stores its data in {info.get('location', '')!r}"
        location = Path(info.get("location", ""))
        target = (root / location).resolve()
        if not info.get("location") or location.is_absolute() or ".." in location.parts or "\\" in str(location) \
                or not target.is_relative_to(root):
            raise ModelFileError(f"{where}, outside the model's folder {root}; external data must sit in the model's folder "
                                 "(a relative name, no '..', no symlink leading out): move it there or re-export the model")
        if not target.is_file():
            raise ModelFileError(f"{where}, which is missing or not a regular file in {root}; copy the data file beside the model")
        tensor.raw_data = _external_bytes(tensor, info, target, where)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _external_bytes(tensor: onnx.TensorProto, info: dict, target: Path, where: str) -> bytes:
    """The tensor's bytes from `target`: exactly dims x itemsize of them, at the stated offset."""
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        offset = int(info.get("offset", 0))
        want = math.prod(tensor.dims) * itemsize
        length = int(info.get("length", want))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{where} with an unreadable type, offset or length ({type(exc).__name__}); the file is corrupt: re-export it") from None
    if tensor.data_type == onnx.TensorProto.STRING or offset < 0 or length != want:
        raise ModelFileError(f"{where} at offset {offset} with length {length}, but its type and dims need {want} bytes; "
                             "the file is corrupt: re-export it")
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(want)
    if len(data) != want:
        raise ModelFileError(f"{where}, which holds {len(data)} of its {want} bytes at offset {offset}; the data file is truncated: re-export it")
    return data


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph and its subgraphs (initializers, Constant and other tensor attributes)."""
    graphs = [graph]
    while graphs:
        g = graphs.pop()
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
