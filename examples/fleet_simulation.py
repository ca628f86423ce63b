"""Fleet learning on one machine: devices adapt the shipped model to their own text, Flower
averages what they learned, held-out devices report bits per character every round.

    pip install 'edge-rnn[fleet]'
    python examples/fleet_simulation.py            # 20 devices, 3 rounds, a few minutes
    python examples/fleet_simulation.py 6 2        # a quicker look: 6 devices, 2 rounds
"""

from __future__ import annotations

import sys

import edge_rnn
from edge_rnn.fleet import format_report
from edge_rnn.fleet.data import FleetSpec
from edge_rnn.fleet.local import LocalConfig
from edge_rnn.fleet.server import Plan
from edge_rnn.fleet.simulate import simulate
from edge_rnn.fleet.strategy import StrategyConfig
from edge_rnn.generate import generate

devices = int(sys.argv[1]) if len(sys.argv) > 1 else 20
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
plan = Plan(
    fleet=FleetSpec(devices=devices, holdout=4),  # one play or Debian text per device; 4 never train
    rounds=rounds,
    strategy=StrategyConfig("fedavg"),  # or StrategyConfig("fedadam", server_lr=1e-3), dp_noise=..., dp_clip=...
    local=LocalConfig(chars=3000, rule="sgd", lr=0.1),  # each device learns from 3000 of its characters a round
    out="fleet-out",
)
result = simulate(plan, workers=2)
print(format_report(result))

model = edge_rnn.load(result["rounds"][-1]["model"])  # the new global model file: same ONNX contract
print("The " + "".join(generate(model.stream(), "The ", max_new_tokens=80)))
