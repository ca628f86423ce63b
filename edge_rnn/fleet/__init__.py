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
The `edge-rnn fleet` command lives in edge_rnn.app.fleet_cli, so the CLI imports this package
(and sets Flower's and Ray's environment below) only when a fleet command runs.
"""

from __future__ import annotations

import os

from edge_rnn.errors import EdgeRNNError

# Set on import of this package, so before any of its modules imports Flower or Ray, whatever
# the entry point (the fleet command, `flwr run edge_rnn.fleet.app`, a test): no telemetry (they
# would phone home); a simulated fleet's Ray stays on 127.0.0.1 (Ray otherwise binds its
# services to the machine's network address); no Ray warning about accelerator variables on a
# CPU-only fleet.
for _name, _value in (("FLWR_TELEMETRY_ENABLED", "0"), ("RAY_USAGE_STATS_ENABLED", "0"),
                      ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")):
    os.environ.setdefault(_name, _value)

INSTALL_HINT = "fleet learning needs Flower with its simulation engine: pip install 'edge-rnn[fleet]'"


def _require_flower():
    try:  # optional: Flower and Ray, the `fleet` extra
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        raise EdgeRNNError(f"{INSTALL_HINT} (missing: {exc.name})") from None


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
