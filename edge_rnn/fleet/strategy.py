"""The server side's aggregation: Flower's own strategies, optionally wrapped for DP.

FedAvg (weighted by each device's tokens) is the default; FedAdam treats the averaged
update as a pseudo-gradient and takes an Adam step of size `server_lr` (Reddi et al. 2020).
With `dp_noise` set, Flower's central-DP wrapper clips each device's update to `dp_clip`
(L2, on the server or, with dp_side="client", on the device by `fixedclipping_mod`) and
adds Gaussian noise of std dp_noise x dp_clip / devices to the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    Strategy,
)

from edge_rnn.errors import SettingsError

STRATEGIES = ("fedavg", "fedadam")
DP_SIDES = ("server", "client")


@dataclass(frozen=True)
class StrategyConfig:
    """name: fedavg | fedadam. server_lr: FedAdam's step (eta); tau: its adaptivity floor.
    dp_noise: noise multiplier (None: no DP wrapper; 0: clipping only). dp_clip: L2 clip of a
    device's update. dp_side: server | client (where the clipping happens)."""

    name: str = "fedavg"
    server_lr: float = 3e-3
    tau: float = 1e-4
    dp_noise: float | None = None
    dp_clip: float = 1.0
    dp_side: str = "server"

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise SettingsError(f"unknown strategy {self.name!r}; use one of {', '.join(STRATEGIES)}")
        if self.dp_side not in DP_SIDES:
            raise SettingsError(f"unknown dp_side {self.dp_side!r}; use one of {', '.join(DP_SIDES)}")
        if self.dp_noise is not None and (self.dp_noise < 0 or not self.dp_clip > 0):
            raise SettingsError(f"DP needs dp_noise >= 0 and dp_clip > 0, got {self.dp_noise!r} and {self.dp_clip!r}")
        if not self.server_lr > 0:
            raise SettingsError(f"server_lr must be > 0, got {self.server_lr!r}")

    @property
    def client_clipping(self) -> bool:
        return self.dp_noise is not None and self.dp_side == "client"


def make_strategy(config: StrategyConfig, devices: int, evaluate_devices: int = 0) -> Strategy:
    """A strategy that trains on all `devices` nodes each round and, if `evaluate_devices`
    > 0, asks that many of them to score the new global model on text not yet learned from."""
    sampling = dict(
        fraction_train=1.0,
        min_train_nodes=devices,
        min_available_nodes=devices,
        fraction_evaluate=min(evaluate_devices / devices, 1.0),
        min_evaluate_nodes=evaluate_devices,
    )
    if config.name == "fedadam":
        strategy: Strategy = FedAdam(eta=config.server_lr, tau=config.tau, **sampling)
    else:
        strategy = FedAvg(**sampling)
    if config.dp_noise is None:
        return strategy
    wrapper = DifferentialPrivacyClientSideFixedClipping if config.client_clipping else DifferentialPrivacyServerSideFixedClipping
    return wrapper(strategy, noise_multiplier=config.dp_noise, clipping_norm=config.dp_clip, num_sampled_clients=devices)
