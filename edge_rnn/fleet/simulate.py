"""A whole fleet on one machine: Flower's simulation engine (Ray) runs the devices.

`simulate(plan)` starts a ServerApp (server.py) and one virtual SuperNode per
participating device, each running the ClientApp (client.py) on its own text, and returns
the per-round figures: held-out devices' bits per character, static and personalised,
against the base model (round 0), and the participants' own before/after figures.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager

from edge_rnn.errors import EdgeRNNError
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
    # optional, the `fleet` extra: Flower's simulation engine (it loads Ray), imported by a run only
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.simulation import run_simulation

    devices = plan.num_devices  # builds the fleet: bad sizes fail here, before Ray starts
    mods = [fixedclipping_mod] if plan.strategy.client_clipping else []
    client_app = make_client_app(plan.model, partition_texts(plan.fleet), mods=mods)
    sink: dict = {}
    server_app = make_server_app(plan, sink, progress=progress)
    t0 = time.perf_counter()
    config = backend_config(workers, verbose)
    with quiet_flower(verbose), ray_started(config):
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=devices,
                       backend_config=config, verbose_logging=verbose)
    return report(plan, sink, time.perf_counter() - t0)


@contextmanager
def ray_started(config: dict, tries: int = 2):
    """Start Ray before Flower does (Flower then reuses it) and shut it down after.

    Ray can time out starting on a busy machine; here that fails fast and is retried once,
    whereas inside Flower it would leave the ServerApp thread waiting for replies for an hour.
    """
    import ray  # optional: the `fleet` extra's simulation engine, imported by a run only

    pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
    for attempt in range(1, tries + 1):
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **config["init_args"])
            break
        except Exception as exc:  # Ray raises plain Exception on a startup timeout
            ray.shutdown()
            if attempt == tries:
                raise EdgeRNNError(f"Ray, Flower's simulation engine, did not start ({exc}); the machine may be "
                                   "overloaded: retry, or lower --workers") from exc
            log.warning("Ray did not start (%s); retrying", exc)
    try:
        yield
    finally:
        ray.shutdown()


KNOWN_WARNINGS = (
    "DEPRECATED FEATURE: The `run_simulation`",  # see docs/fleet.md, Known limits
    "fraction_evaluate is set to 0.0",  # --evaluate-devices 0, on purpose
)


def _not_known(record: logging.LogRecord) -> bool:
    return not record.getMessage().lstrip().startswith(KNOWN_WARNINGS)


@contextmanager
def quiet_flower(verbose: bool):
    """Flower logs every step at INFO; keep its warnings only (less two we expect), unless -v."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
        logger.addFilter(_not_known)
    try:
        yield
    finally:
        logger.setLevel(level)
        logger.removeFilter(_not_known)


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
