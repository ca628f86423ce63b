"""The device side: a Flower ClientApp (Message API) around the runtime's online adapter.

On a train message the device loads the global weights into its copy of the base model,
adapts them with TBPTT over the characters it wrote this round and replies with the
adapted weights, the number of tokens (FedAvg's example count) and its bits per character
before/after. On an evaluate message it scores the global weights on text it has not
learned from yet. The raw text never leaves the device; only weights and metrics do.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge_rnn.corpus import read_text_file
from edge_rnn.errors import SettingsError
from edge_rnn.fleet import local
from edge_rnn.fleet.data import Device
from edge_rnn.runtime.evaluate import score_text

# (context, server round, characters) -> the text this device writes in that round
TextSource = Callable[[Context, int, int], str]
ModelPath = str | None | Callable[[Context], str | None]


def to_record(model, weights: dict) -> ArrayRecord:
    """Named arrays in the fixed order of `local.names(model)`."""
    return ArrayRecord({n: Array(a) for n, a in zip(local.names(model), local.to_ndarrays(model, weights))})


def from_record(model, record: ArrayRecord) -> dict:
    if set(record.keys()) != set(local.names(model)):
        raise SettingsError(f"got weights {sorted(record.keys())} for a model with {local.names(model)}; "
                            "the server and the device must run the same base model file")
    return local.from_ndarrays(model, (record[n].numpy() for n in local.names(model)))


def partition_texts(fleet) -> TextSource:
    """Simulation: the device is the fleet participant at the node's partition-id."""

    def text(context: Context, round_: int, chars: int) -> str:
        device = fleet.resolve().participants[int(context.node_config["partition-id"])]
        return device.chunk(round_, chars)

    return text


def file_text(context: Context, round_: int, chars: int) -> str:
    """Deployment: the device's text file, named by the SuperNode's node config `text-path`."""
    if "text-path" not in context.node_config:
        raise SettingsError("this SuperNode has no text: start it with --node-config 'text-path=\"/path/to/text.txt\"'")
    text = read_text_file(context.node_config["text-path"])
    return Device("local", "local", text).chunk(round_, chars)


def make_client_app(model_path: ModelPath, texts: TextSource, mods: list | None = None) -> ClientApp:
    """A ClientApp whose devices hold the base model at `model_path` (None: the shipped
    model; or a function of the Context, e.g. reading the node config) and write the text
    `texts` gives them. `mods` are Flower client mods (fixedclipping_mod: client-side DP)."""
    app = ClientApp(mods=mods or [])

    def load(context: Context):
        return local.load_model(model_path(context) if callable(model_path) else model_path)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        settings = local.LocalConfig.from_config(config)
        model = load(context)
        text = texts(context, int(config["server-round"]), settings.chars)
        weights, metrics = local.local_round(model, from_record(model, msg.content["arrays"]), text, settings)
        content = RecordDict({"arrays": to_record(model, weights), "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        settings = local.LocalConfig.from_config(config)
        model = load(context)
        model.set_weights(from_record(model, msg.content["arrays"]))
        text = texts(context, int(config["server-round"]) + 1, settings.chars)  # not learned from yet
        with local.one_thread():
            result = score_text(model, text)
        metrics = MetricRecord({"num-examples": int(result["tokens"]), "bpc": result["bpc"]})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app
