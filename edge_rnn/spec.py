"""The model-file contract: graph names, metadata keys and the architecture dataclass.

Everything that reads or writes a model file takes its names from here, so the
contract lives in one place (and in the README's table, which mirrors it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from edge_rnn.errors import ModelFileError, SettingsError

FORMAT_VERSION = "1"
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # gate blocks stacked in W and R (ONNX order: -, z r h, i o f c)
OPERATORS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}  # cell -> its ONNX operator
CELL_OF_OPERATOR = {op: cell for cell, op in OPERATORS.items()}
# The operators' default activations, in the order of their `activations` attribute (rnn f; gru f, g; lstm f, g, h).
DEFAULT_ACTIVATIONS = {"rnn": ("Tanh",), "gru": ("Sigmoid", "Tanh"), "lstm": ("Sigmoid", "Tanh", "Tanh")}

# Graph inputs and outputs.
TOKENS = "tokens"  # int64 [B, T]
STATE_H = "state_h"  # float32 [L, B, H]
STATE_C = "state_c"  # float32 [L, B, H], LSTM only
LOGITS = "logits"  # float32 [B, T, V]
NEW_STATE_H = "new_state_h"  # float32 [L, B, H]
NEW_STATE_C = "new_state_c"  # float32 [L, B, H], LSTM only

# Initializer names, so the runtime can find weights without guessing.
EMBEDDING = "embedding"  # [V, E]
HEAD_WEIGHT = "head.weight"  # [H, V] (MatMul layout: logits = h @ head.weight + head.bias)
HEAD_BIAS = "head.bias"  # [V]


def layer_weight_names(layer: int) -> tuple[str, str, str]:
    """ONNX W, R, B initializer names of one recurrent layer."""
    return f"layer{layer}.W", f"layer{layer}.R", f"layer{layer}.B"


# metadata_props keys.
KEY_FORMAT = "edge_rnn.format_version"
KEY_SPEC = "edge_rnn.spec"  # JSON of ModelSpec
KEY_VOCAB = "edge_rnn.vocab"  # JSON list of symbols, index = token id
KEY_TRAINING = "edge_rnn.training"  # JSON: corpus, validation figures, steps
KEY_ADAPTATION = "edge_rnn.adaptation"  # JSON list: one record per adaptation session
KEY_QUANT = "edge_rnn.quantization"  # "int8-dynamic" when quantized


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a character language model; the model file is its source of truth.

    cell: "rnn" (Elman, tanh: input weights W, recurrent U, output V), "gru" or "lstm".
    vocab_size V, embed_size E, hidden_size H, layers L.
    linear_before_reset: the GRU variant, as ONNX's GRU attribute: 1 (PyTorch's nn.GRU) applies
    the reset gate after the recurrent product, 0 before it; other cells have only 1.
    """

    cell: str
    vocab_size: int
    embed_size: int
    hidden_size: int
    layers: int
    linear_before_reset: int = 1

    def __post_init__(self) -> None:

        if self.cell not in CELLS:
            raise SettingsError(f"unknown cell {self.cell!r}; use one of {', '.join(CELLS)}")
        for name in ("vocab_size", "embed_size", "hidden_size", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name} must be a positive integer, got {value!r}")
        if self.linear_before_reset not in ((0, 1) if self.cell == "gru" else (1,)) or isinstance(self.linear_before_reset, bool):
            raise SettingsError(f"linear_before_reset must be 0 or 1 for a gru (1 for other cells), got {self.linear_before_reset!r}")

    @property
    def gates(self) -> int:
        """Gate blocks stacked in W and R: 1 for rnn, 3 for gru, 4 for lstm."""
        return GATES[self.cell]

    @property
    def has_cell_state(self) -> bool:
        return self.cell == "lstm"

    @property
    def state_names(self) -> tuple[str, ...]:
        return (STATE_H, STATE_C) if self.has_cell_state else (STATE_H,)

    @property
    def new_state_names(self) -> tuple[str, ...]:
        return (NEW_STATE_H, NEW_STATE_C) if self.has_cell_state else (NEW_STATE_H,)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, linear_before_reset: int = 1) -> "ModelSpec":
        """linear_before_reset: the value for files written before the spec carried it (the
        graph's GRU attribute, see edge_rnn.graph.graph_linear_before_reset)."""

        try:
            fields = json.loads(text)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            fields.setdefault("linear_before_reset", linear_before_reset if fields.get("cell") == "gru" else 1)
            return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls)})
        except (ValueError, KeyError, TypeError, SettingsError) as exc:  # SettingsError: e.g. an unknown cell
            raise ModelFileError(
                f"metadata {KEY_SPEC!r} is not a valid model spec ({exc}); "
                "re-export the model with `edge-rnn export`"
            ) from None

    def parameter_count(self) -> int:
        g, E, H, V = self.gates, self.embed_size, self.hidden_size, self.vocab_size
        rec = sum(g * H * ((E if i == 0 else H) + H + 2) for i in range(self.layers))
        return V * E + rec + H * V + V
