"""The server side: a Flower ServerApp that runs a strategy and ends each round with a model file.

After each round's aggregation `RoundEnd` writes the new global weights as a model file
of the ONNX contract (`Model.save`, atomic; its adaptation history records the round) to
OUT/global.onnx and OUT/round-NNN.onnx, then scores held-out devices that did not take
part: static (the global model as shipped) and personalised (with their own local
adaptation on top). Round 0 is the base model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flwr.app import ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

import edge_rnn
from edge_rnn.atomic import atomic_write
from edge_rnn.errors import EdgeRNNError
from edge_rnn.fleet import local
from edge_rnn.fleet.local import LocalConfig
from edge_rnn.fleet.client import from_record, to_record
from edge_rnn.fleet.data import Device, Fleet, FleetSpec
from edge_rnn.fleet.strategy import StrategyConfig, make_strategy

log = logging.getLogger("edge_rnn.fleet")


@dataclass(frozen=True)
class Plan:
    """Everything a fleet run needs. model: base model file (None: the shipped one).
    fleet: the devices (FleetSpec for the built-in one, or a Fleet of your own texts).
    eval_chars: characters of each held-out device's text scored per round.
    evaluate_devices: participants asked each round to score the global model on text
    they have not learned from (Flower's federated evaluation; 0 = off). out: folder of
    the round model files. devices: nodes that train each round (None: every participant
    of `fleet`; a deployment, whose texts stay on the devices, sets it)."""

    model: str | None = None
    fleet: FleetSpec | Fleet = FleetSpec()
    rounds: int = 3
    strategy: StrategyConfig = StrategyConfig()
    local: LocalConfig = LocalConfig()
    eval_chars: int = 2000
    evaluate_devices: int = 0
    out: str = "fleet-out"
    devices: int | None = None

    @property
    def num_devices(self) -> int:
        return self.devices if self.devices is not None else len(self.fleet.resolve().participants)

    def describe(self) -> dict:
        fleet = self.fleet.resolve()
        return {
            "model": self.model, "rounds": self.rounds, "strategy": asdict(self.strategy), "local": asdict(self.local),
            "devices": [d.name for d in fleet.participants], "heldout": [d.name for d in fleet.heldout],
            "eval_chars": self.eval_chars, "out": self.out,
        }


@dataclass
class RoundEnd:
    """Flower's `evaluate_fn`: called with the global arrays before round 1 and after each round."""

    plan: Plan
    rows: list = field(default_factory=list)
    progress: object = None

    def __post_init__(self):
        self.model = edge_rnn.load(self.plan.model, backend="numpy")  # the server's own copy
        Path(self.plan.out).mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()

    def __call__(self, server_round: int, arrays) -> MetricRecord:
        row = self.end(server_round, from_record(self.model, arrays))
        return MetricRecord({k: v for k, v in row.items() if isinstance(v, (int, float))})

    def end(self, server_round: int, weights: dict) -> dict:
        """Write the round's model file (round > 0) and score the held-out devices."""
        row = {"round": server_round}
        if server_round > 0:
            row["model"] = str(self.save(server_round, weights))
        row.update(heldout_figures(self.model, weights, self.plan.fleet.resolve().heldout, self.plan))
        row["seconds"] = time.perf_counter() - self.t0
        self.rows.append(row)
        log.info("round %d: %s", server_round, {k: v for k, v in row.items() if k != "heldout"})
        if self.progress is not None and server_round > 0:
            self.progress.update(1)
        return row

    def save(self, server_round: int, weights: dict) -> Path:
        self.model.set_weights(weights)
        record = {
            "kind": "fleet", "round": server_round, "rounds": self.plan.rounds, "devices": self.plan.num_devices,
            "strategy": asdict(self.plan.strategy), "local": asdict(self.plan.local),
        }
        out = Path(self.plan.out)
        path = self.model.save(out / f"round-{server_round:03d}.onnx", record=record)
        data = path.read_bytes()
        atomic_write(out / "global.onnx", lambda f: f.write(data))
        return out / "global.onnx"


def heldout_figures(model, weights: dict, devices: tuple[Device, ...], plan: Plan) -> dict:
    """Token-weighted bits per character over the held-out devices, overall and by style."""
    if not devices:
        return {}
    per = {d.name: dict(local.personalised(model, weights, d.text[: plan.eval_chars], plan.local), style=d.style) for d in devices}
    out = {"heldout": per}
    groups = {"all": list(per.values()),
              "shakespeare": [r for r in per.values() if r["style"] == "shakespeare"],
              "other": [r for r in per.values() if r["style"] != "shakespeare"]}
    for group, rows in groups.items():
        tokens = sum(r["tokens"] for r in rows)
        if not tokens:
            continue
        prefix = "" if group == "all" else f"{group}-"
        for kind in ("static", "personalised"):
            out[f"{prefix}{kind}"] = sum(r[kind] * r["tokens"] for r in rows) / tokens
    return out


def make_server_app(plan: Plan, sink: dict | None = None, progress=None) -> ServerApp:
    """A ServerApp running `plan`; `sink` (a dict) receives rows and client metrics when it ends."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_plan(plan, grid, {} if sink is None else sink, progress)

    return app


def run_plan(plan: Plan, grid: Grid, sink: dict, progress=None) -> None:
    """The server's whole run: the strategy's rounds, a model file and held-out figures after each."""
    round_end = RoundEnd(plan, progress=progress)
    strategy = make_strategy(plan.strategy, plan.num_devices, plan.evaluate_devices)
    result = strategy.start(
        grid=grid, initial_arrays=to_record(round_end.model, round_end.model.host_weights()), num_rounds=plan.rounds,
        train_config=ConfigRecord(plan.local.to_config()), evaluate_config=ConfigRecord(plan.local.to_config()),
        evaluate_fn=round_end,
    )
    sink["rows"] = round_end.rows
    sink["train"] = {r: dict(m) for r, m in result.train_metrics_clientapp.items()}
    sink["evaluate"] = {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()}
    missing = [r for r in range(1, plan.rounds + 1) if r not in sink["train"]]
    if missing:
        raise EdgeRNNError(f"no device returned an update in round(s) {missing}; run with -v to see the devices' errors")
