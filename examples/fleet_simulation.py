"""Fleet learning on one machine: devices adapt the shipped model to their own text, Flower
averages what they learned, held-out devices report bits per character every round.

    pip install 'edge-rnn[fleet]'
    python examples/fleet_simulation.py            # 20 devices, 3 rounds, a few minutes
    python examples/fleet_simulation.py 6 2        # a quicker look: 6 devices, 2 rounds
"""

from __future__ import annotations

import argparse

import edge_rnn
from edge_rnn.fleet import format_report
from edge_rnn.fleet.data import FleetSpec
from edge_rnn.fleet.local import LocalConfig
from edge_rnn.fleet.server import Plan
from edge_rnn.fleet.simulate import simulate
from edge_rnn.fleet.strategy import StrategyConfig
from edge_rnn.app.generate import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("devices", type=int, nargs="?", default=20, help="devices in the fleet, 4 of them held out (default 20)")
    p.add_argument("rounds", type=int, nargs="?", default=3, help="federated rounds (default 3)")
    args = p.parse_args()
    plan = Plan(
        fleet=FleetSpec(devices=args.devices, holdout=4),  # one play or Debian text per device; 4 never train
        rounds=args.rounds,
        strategy=StrategyConfig("fedavg"),  # or StrategyConfig("fedadam", server_lr=1e-3), dp_noise=..., dp_clip=...
        local=LocalConfig(chars=3000, rule="sgd", lr=0.1),  # each device learns from 3000 of its characters a round
        out="fleet-out",
    )
    result = simulate(plan, workers=2)
    print(format_report(result))
    model = edge_rnn.load(result["rounds"][-1]["model"])  # the new global model file: same ONNX contract
    print("The " + "".join(generate(model.stream(), "The ", max_new_tokens=80)))


if __name__ == "__main__":
    main()
