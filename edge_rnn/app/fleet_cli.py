"""`edge-rnn fleet simulate`: the command of edge_rnn.fleet (fleet learning with Flower, the `fleet` extra).

It lives in the product, apart from the fleet package, so building the CLI's parser imports
neither Flower nor the package that sets Flower's and Ray's environment.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields

from tqdm import tqdm

from edge_rnn.app.cli import _formatter, _shows_progress, add_model_argument, add_output_options, model_argument


def cmd_simulate(args) -> None:
    # optional: edge_rnn.fleet runs on Flower and Ray (the `fleet` extra) and sets their
    # environment on import, so only this command imports it
    from edge_rnn.fleet import _require_flower, format_report

    _require_flower()
    # optional, the `fleet` extra: server, simulate and strategy import Flower at the top
    from edge_rnn.fleet.data import FleetSpec
    from edge_rnn.fleet.local import LocalConfig
    from edge_rnn.fleet.server import Plan
    from edge_rnn.fleet.simulate import simulate
    from edge_rnn.fleet.strategy import StrategyConfig

    local = LocalConfig(**{k: getattr(args, k) for k in ("chars", "rule", "lr", "k1", "k2", "clip", "trainable")
                           if getattr(args, k) is not None})
    strategy = StrategyConfig(name=args.strategy, server_lr=args.server_lr, dp_noise=args.dp_noise,
                              dp_clip=args.dp_clip, dp_side=args.dp_side)
    plan = Plan(model=model_argument(args), fleet=FleetSpec(args.devices, args.holdout), rounds=args.rounds, strategy=strategy,
                local=local, eval_chars=args.eval_chars, evaluate_devices=args.evaluate_devices, out=args.out)
    with tqdm(total=args.rounds, desc="rounds", file=sys.stderr, disable=not _shows_progress(args), leave=False) as bar:
        if args.secagg:
            from edge_rnn.fleet.secagg import simulate_secagg  # optional: Flower's legacy workflow (the `fleet` extra)

            result = simulate_secagg(plan, workers=args.workers, verbose=args.verbose, progress=bar)
        else:
            result = simulate(plan, workers=args.workers, verbose=args.verbose, progress=bar)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))


def register(subparsers) -> None:
    f = subparsers.add_parser("fleet", help="fleet learning with Flower (needs the fleet extra)")
    sub = f.add_subparsers(dest="fleet_command", required=True)
    s = sub.add_parser("simulate", help="simulate a fleet of devices on this machine (Flower + Ray)", formatter_class=_formatter(_local_defaults),
                       description="Devices adapt the model to their own text; Flower aggregates; held-out devices "
                                   "report bits per character each round (static and with their own adaptation).")
    add_model_argument(s, "base model file or shipped model name")
    s.add_argument("--devices", type=int, default=20, help="participating devices")
    s.add_argument("--holdout", type=int, default=4, help="held-out devices that never train")
    s.add_argument("--rounds", type=int, default=3, help="federated rounds")
    s.add_argument("--strategy", choices=["fedavg", "fedadam"], default="fedavg", help="how the server combines the devices' weights")
    s.add_argument("--server-lr", type=float, default=3e-3, help="FedAdam's server step")
    s.add_argument("--dp-noise", type=float, help="central DP: noise multiplier (0 = clipping only; default: no DP)")
    s.add_argument("--dp-clip", type=float, default=1.0, help="central DP: L2 clip of each device's update")
    s.add_argument("--dp-side", choices=["server", "client"], default="server", help="where updates are clipped")
    s.add_argument("--secagg", action="store_true", help="SecAgg+ secure aggregation (FedAvg only)")
    s.add_argument("--chars", type=int, help="characters each device learns from per round")
    s.add_argument("--rule", choices=["sgd", "adam", "dynamic"], help="local update rule")
    s.add_argument("--lr", type=float, help="local step size")
    s.add_argument("--k1", type=int, help="local update every k1 characters")
    s.add_argument("--k2", type=int, help="local backpropagation through the last k2 characters")
    s.add_argument("--clip", type=float, help="local gradient-norm clip")
    s.add_argument("--trainable", choices=["all", "head", "last", "recurrent"], help="which weights learn on the devices")
    s.add_argument("--eval-chars", type=int, default=2000, help="characters of each held-out device scored")
    s.add_argument("--evaluate-devices", type=int, default=0,
                   help="participants that also score each new global model on unseen text")
    s.add_argument("--workers", type=int, default=2, help="devices computed at once (Ray CPUs)")
    s.add_argument("--out", default="fleet-out", help="folder for global.onnx and round-NNN.onnx")
    add_output_options(s)
    s.set_defaults(func=cmd_simulate)


def _local_defaults() -> dict:
    """LocalConfig's defaults, shown by --help for the options left None."""
    from edge_rnn.fleet.local import LocalConfig  # optional: see cmd_simulate (fleet.local itself needs no Flower)

    return {f.name: f.default for f in fields(LocalConfig)}
