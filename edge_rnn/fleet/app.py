"""A Flower App for a real deployment: `flwr run` starts `server_app` on the SuperLink's host,
every SuperNode (device) runs `client_app` on its own text file.

Run config (pyproject's [tool.flwr.app.config], or `flwr run --run-config 'k=v ...'`):
model (base model file on the server; "" = the shipped one), devices (nodes per round),
rounds, strategy, server-lr, dp-noise (< 0: no DP), dp-clip, dp-side, chars, rule, lr,
heldout (server-side text files scored each round, comma-separated; "" = none),
eval-chars, evaluate-devices, out (folder of global.onnx and round-NNN.onnx).
Node config (`flower-supernode --node-config '...'`): text-path (required), model-path
(the same base model file as the server's; "" = the shipped one).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp

from edge_rnn.corpus import read_text_file
from edge_rnn.fleet.client import file_text, make_client_app
from edge_rnn.fleet.data import Device, Fleet
from edge_rnn.fleet.local import LocalConfig
from edge_rnn.fleet.server import Plan, run_plan
from edge_rnn.fleet.strategy import StrategyConfig


def plan_from(run_config) -> Plan:
    get = run_config.get
    heldout = tuple(Device(p, "heldout", _read(p)) for p in str(get("heldout", "")).split(",") if p.strip())
    noise = float(get("dp-noise", -1.0))
    return Plan(
        model=str(get("model", "")) or None,
        fleet=Fleet(participants=(), heldout=heldout),
        devices=int(get("devices", 2)),
        rounds=int(get("rounds", 3)),
        strategy=StrategyConfig(name=str(get("strategy", "fedavg")), server_lr=float(get("server-lr", 3e-3)),
                                dp_noise=noise if noise >= 0 else None, dp_clip=float(get("dp-clip", 1.0)),
                                dp_side=str(get("dp-side", "server"))),
        local=LocalConfig(chars=int(get("chars", 3000)), rule=str(get("rule", "sgd")), lr=float(get("lr", 0.1))),
        eval_chars=int(get("eval-chars", 2000)),
        evaluate_devices=int(get("evaluate-devices", 0)),
        out=str(get("out", "fleet-out")),
    )


def _read(path: str) -> str:
    return read_text_file(path.strip())


def _node_model(context: Context) -> str | None:
    return str(context.node_config.get("model-path", "")) or None


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    run_plan(plan_from(context.run_config), grid, sink={})


client_app = make_client_app(_node_model, file_text)
# for dp-side = "server" or no DP; with dp-side = "client" the devices clip their own updates:
client_app_clipped = make_client_app(_node_model, file_text, mods=[fixedclipping_mod])
