"""A whole fleet on one machine: Flower's simulation engine (Ray) runs the devices.

`simulate(plan)` starts a ServerApp (server.py) and one virtual SuperNode per
participating device, each running the ClientApp (client.py) on its own text, and returns
the per-round figures: held-out devices' bits per character, static and personalised,
against the base model (round 0), and the participants' own before/after figures.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from edge_rnn.fleet.client import make_client_app, partition_texts
from edge_rnn.fleet.server import Plan, make_server_app

log = logging.getLogger("edge_rnn.fleet")


def backend_config(workers: int, verbose: bool = False) -> dict:
    """Ray with `workers` CPUs and one CPU per device: at most `workers` devices run at once."""
    return {
        "init_args": {"num_cpus": workers, "include_dashboard": False, "log_to_driver": verbose,
                      "logging_level": logging.INFO if verbose else logging.WARNING},
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }


def simulate(plan: Plan, workers: int = 2, verbose: bool = False, progress=None) -> dict:
    """Run `plan` in Flower's simulation engine and return its report (see `report`)."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.simulation import run_simulation

    mods = [fixedclipping_mod] if plan.strategy.client_clipping else []
    client_app = make_client_app(plan.model, partition_texts(plan.fleet), mods=mods)
    sink: dict = {}
    server_app = make_server_app(plan, sink, progress=progress)
    t0 = time.perf_counter()
    with quiet_flower(verbose):
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=plan.num_devices,
                       backend_config=backend_config(workers, verbose), verbose_logging=verbose)
    return report(plan, sink, time.perf_counter() - t0)


@contextmanager
def quiet_flower(verbose: bool):
    """Flower logs every step at INFO; keep its warnings only, unless -v."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def report(plan: Plan, sink: dict, seconds: float) -> dict:
    """{"plan", "seconds", "rounds": [{round, model, static, personalised, shakespeare-*, other-*,
    heldout: {device: {...}}, participants: {bpc-before, bpc-online, bpc-after, update-norm}}]}."""
    rows = sink.get("rows", [])
    for row in rows:
        train = sink.get("train", {}).get(row["round"])
        if train:
            row["participants"] = {k: v for k, v in train.items() if k != "num-examples"}
        federated = sink.get("evaluate", {}).get(row["round"])
        if federated:
            row["participants"] = dict(row.get("participants", {}), **{"bpc-next": federated["bpc"]})
    return {"plan": plan.describe(), "seconds": seconds, "rounds": rows}
