"""Fleet learning: many devices adapt a model to their own text, Flower combines what they learned.

Each device runs the runtime's online adapter (prequential TBPTT) over text that never
leaves it and sends back adapted weights; a Flower strategy (FedAvg, FedAdam; optionally
with differential-privacy clipping and noise) averages them into the next global model,
written each round as a model file of the ONNX contract. Needs the `fleet` extra:

    pip install 'edge-rnn[fleet]'
    edge-rnn fleet simulate --devices 20 --rounds 3 --out fleet-out

Modules: data (the simulated fleet's devices and texts), local (one device's round, no
Flower), client (the ClientApp), strategy (Flower strategies and DP wrappers), server (the
ServerApp and the round-end model files), simulate (Flower's simulation engine), secagg
(SecAgg+ through Flower's legacy workflow), app (ServerApp/ClientApp for `flwr run`).
This module itself imports no Flower, so `edge-rnn --help` works without the extra.
"""

from __future__ import annotations

import os

# Set before Flower or Ray is imported: no telemetry (they would phone home); a simulated
# fleet's Ray stays on 127.0.0.1 (Ray otherwise binds its services to the machine's
# network address); no Ray warning about accelerator variables on a CPU-only fleet.
for _name, _value in (("FLWR_TELEMETRY_ENABLED", "0"), ("RAY_USAGE_STATS_ENABLED", "0"),
                      ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")):
    os.environ.setdefault(_name, _value)

INSTALL_HINT = "fleet learning needs Flower with its simulation engine: pip install 'edge-rnn[fleet]'"


def _require_flower():
    from edge_rnn.errors import EdgeRNNError

    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        raise EdgeRNNError(f"{INSTALL_HINT} (missing: {exc.name})") from None


def cmd_simulate(args) -> None:
    import json
    import sys

    from tqdm import tqdm

    _require_flower()
    from edge_rnn.app.cli import _shows_progress, model_argument
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
            from edge_rnn.fleet.secagg import simulate_secagg

            result = simulate_secagg(plan, workers=args.workers, verbose=args.verbose, progress=bar)
        else:
            result = simulate(plan, workers=args.workers, verbose=args.verbose, progress=bar)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))


def format_report(result: dict) -> str:
    """The per-round table: held-out bits per character (static / personalised), by style."""
    lines = [f"{'round':>5}  {'held-out static':>15}  {'personalised':>12}  {'shakespeare':>13}  {'other style':>13}"
             f"  {'participants before->after':>26}"]
    for row in result["rounds"]:
        part = row.get("participants", {})
        lines.append(
            f"{'base' if row['round'] == 0 else row['round']:>5}  {row.get('static', float('nan')):>15.4f}  "
            f"{row.get('personalised', float('nan')):>12.4f}  "
            f"{row.get('shakespeare-static', float('nan')):>6.3f}/{row.get('shakespeare-personalised', float('nan')):.3f}  "
            f"{row.get('other-static', float('nan')):>6.3f}/{row.get('other-personalised', float('nan')):.3f}  "
            + (f"{part['bpc-before']:>17.3f} -> {part['bpc-after']:.3f}" if part else "")
        )
    plan = result["plan"]
    lines.append(f"{len(plan['devices'])} devices, {len(plan['heldout'])} held out, {plan['strategy']['name']}, "
                 f"{result['seconds']:.0f} s; global model: {plan['out']}/global.onnx")
    return "\n".join(lines)


def register(subparsers) -> None:
    from edge_rnn.app.cli import _formatter, add_model_argument, add_output_options

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
    """LocalConfig's defaults, shown by --help for the options left None (no Flower imported)."""
    from dataclasses import fields

    from edge_rnn.fleet.local import LocalConfig

    return {f.name: f.default for f in fields(LocalConfig)}
