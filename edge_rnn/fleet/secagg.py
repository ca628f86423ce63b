"""Secure aggregation (SecAgg+): the server learns only the sum of the devices' weights.

In Flower 1.42 SecAgg+ exists only for the legacy API: a `SecAggPlusWorkflow` on the
server (with a legacy FedAvg strategy in a LegacyContext) and `secaggplus_mod` on the
devices around a NumPyClient. The device's learning is the same `local.local_round` as the
Message-API client's; only the transport differs. Each device quantises its token-weighted
weights to 2**22 levels in [-clipping_range, clipping_range] and masks them with pairwise
secrets, so its update is never seen in the clear.
"""

from __future__ import annotations

import math
import time

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from edge_rnn.errors import SettingsError
from edge_rnn.fleet import local
from edge_rnn.fleet.client import TextSource, partition_texts
from edge_rnn.fleet.server import Plan, RoundEnd
from edge_rnn.fleet.simulate import backend_config, quiet_flower, ray_started, report


class DeviceClient(NumPyClient):
    """The legacy-API face of a device: fit = one local round on this round's text."""

    def __init__(self, model_path: str | None, texts: TextSource, context: Context):
        self.model_path, self.texts, self.context = model_path, texts, context

    def fit(self, parameters, config):
        settings = local.LocalConfig.from_config(config)
        model = local.load_model(self.model_path)
        text = self.texts(self.context, int(config["server-round"]), settings.chars)
        weights, metrics = local.local_round(model, local.from_ndarrays(model, parameters), text, settings)
        return local.to_ndarrays(model, weights), metrics["num-examples"], metrics


def make_secagg_client_app(model_path: str | None, texts: TextSource) -> ClientApp:
    def client_fn(context: Context):
        return DeviceClient(model_path, texts, context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def make_secagg_server_app(plan: Plan, sink: dict, progress=None, num_shares: float = 0.5,
                           reconstruction_threshold: float = 0.6) -> ServerApp:
    """FedAvg through SecAgg+: each device's key is split into num_shares (a fraction of the
    devices) shares, of which reconstruction_threshold (a fraction) recover a dropped device."""
    if plan.strategy.name != "fedavg" or plan.strategy.dp_noise is not None:
        raise SettingsError("--secagg runs plain FedAvg in this version (Flower's SecAgg+ is legacy-API only); "
                            "drop --strategy/--dp-noise or run without --secagg")
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        round_end = RoundEnd(plan, progress=progress)
        model = round_end.model
        weights = model.host_weights()
        clipping_range = 2.0 * max(8.0, max(float(np.abs(w).max()) for w in weights.values()))

        def evaluate_fn(server_round, ndarrays, config):
            row = round_end.end(server_round, local.from_ndarrays(model, ndarrays))
            return row.get("static", math.nan), {k: v for k, v in row.items() if isinstance(v, (int, float))}

        strategy = LegacyFedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=plan.num_devices, min_available_clients=plan.num_devices,
            initial_parameters=ndarrays_to_parameters(local.to_ndarrays(model, weights)),
            on_fit_config_fn=lambda r: dict(plan.local.to_config(), **{"server-round": r}),
            evaluate_fn=evaluate_fn, fit_metrics_aggregation_fn=_weighted_mean,
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=plan.rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
            clipping_range=clipping_range, max_weight=float(plan.local.chars),
        ))
        workflow(grid, legacy)
        sink["rows"] = round_end.rows
        sink["train"] = {r: dict(values) for r, values in _by_round(legacy.history.metrics_distributed_fit).items()}

    return app


def _weighted_mean(results: list[tuple[int, dict]]) -> dict:
    total = sum(n for n, _ in results)
    keys = {k for _, m in results for k in m if k != "num-examples"}
    return {k: sum(n * m[k] for n, m in results if k in m) / total for k in keys} if total else {}


def _by_round(metrics: dict[str, list[tuple[int, float]]]) -> dict[int, dict]:
    """History's {metric: [(round, value)]} -> {round: {metric: value}}."""
    out: dict[int, dict] = {}
    for name, series in metrics.items():
        for server_round, value in series:
            out.setdefault(server_round, {})[name] = value
    return out


def simulate_secagg(plan: Plan, workers: int = 2, verbose: bool = False, progress=None) -> dict:
    from flwr.simulation import run_simulation  # optional: the `fleet` extra's engine (loads Ray), imported by a run only

    sink: dict = {}
    t0 = time.perf_counter()
    config = backend_config(workers, verbose)
    with quiet_flower(verbose), ray_started(config):
        run_simulation(server_app=make_secagg_server_app(plan, sink, progress),
                       client_app=make_secagg_client_app(plan.model, partition_texts(plan.fleet)),
                       num_supernodes=plan.num_devices, backend_config=config, verbose_logging=verbose)
    return report(plan, sink, time.perf_counter() - t0)
