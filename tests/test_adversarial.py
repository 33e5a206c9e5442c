"""Adversarial fine-tuning, the per-clip-epsilon PGD it shares with the gate, and the gate's corruptions."""

from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch
from support.gate_fixtures import train_tiny_checkpoint, write_datasets

from deploy.gate import corruptions as c
from deploy.gate.attacks import snr_db, waveform_model
from training import adversarial
from training.adversarial import (
    CLIP_LEVELS,
    ClipBank,
    hard_clip_some,
    held_out_metrics,
    main,
    mix_backgrounds,
    split_records,
)
from training.attacks import PerClipL2PGD, PerClipLinfPGD, epsilon_for, per_clip_pgd
from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.data import load_features
from training.train import AGENT_HOP_FRAMES

RATE = 16000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic data and a tiny checkpoint (held-out fold 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("adv")
    us8k, _ = write_datasets(root)
    yield {"root": root, "us8k": us8k, "checkpoint": train_tiny_checkpoint(us8k, root / "tiny.pt")}
    torch.set_num_threads(threads)


def windows(n: int, length: int, seed: int = 0) -> np.ndarray:
    """Tones of different loudness: (n, length) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / RATE
    return np.stack(
        [rng.uniform(0.05, 0.6) * np.sin(2 * np.pi * rng.uniform(200, 3000) * t) for _ in range(n)]
    ).astype(np.float32)


@pytest.mark.parametrize(
    "kind, stock", [(PerClipLinfPGD, fb.attacks.LinfPGD), (PerClipL2PGD, fb.attacks.L2PGD)]
)
def test_per_clip_pgd_is_stock_foolbox_with_one_epsilon_per_clip(tiny, kind, stock):
    checkpoint = load_checkpoint(tiny["checkpoint"])
    model = waveform_model(checkpoint)
    fmodel = fb.PyTorchModel(model, bounds=(-1, 1))
    x = torch.from_numpy(windows(4, checkpoint.frontend.window_samples))  # (4, samples), loudness varies
    y = model(x).argmax(1)
    name = "linf" if kind is PerClipLinfPGD else "l2"
    eps = torch.tensor([epsilon_for(row, 30.0, name) for row in x.numpy()])
    batched = per_clip_pgd(kind(steps=5, random_start=False), fmodel, x, y, eps)
    for i in range(len(x)):
        one = slice(i, i + 1)
        _, clipped, _ = stock(steps=5, random_start=False)(fmodel, x[one], y[one], epsilons=float(eps[i]))
        alone = per_clip_pgd(kind(steps=5, random_start=False), fmodel, x[one], y[one], eps[one])
        np.testing.assert_allclose(alone.numpy(), clipped.numpy(), rtol=0, atol=1e-6)  # foolbox arithmetic
        # In a batch, float rounding in batched convolutions moves the path a little, never the budget.
        delta = (batched[i] - x[i]).numpy()
        size = np.abs(delta).max() if name == "linf" else np.linalg.norm(delta)
        stock_size = (np.abs if name == "linf" else np.linalg.norm)((clipped[0] - x[i]).numpy())
        assert size <= float(eps[i]) * (1 + 1e-5)
        assert np.max(size) == pytest.approx(np.max(stock_size), rel=0.02)


def test_budget_epsilons_give_the_stated_snr():
    x = windows(3, RATE)
    for row in x:
        linf = epsilon_for(row, 40.0, "linf")
        full_sign = row + linf * np.sign(np.random.default_rng(0).standard_normal(row.size))
        assert snr_db(row[None], full_sign[None].astype(np.float32))[0] == pytest.approx(40.0, abs=0.01)
        l2 = epsilon_for(row, 30.0, "l2")
        delta = np.full(row.size, l2 / np.sqrt(row.size))
        assert snr_db(row[None], (row + delta)[None])[0] == pytest.approx(30.0, abs=0.01)


def test_noise_is_mixed_at_the_requested_snr():
    rng = np.random.default_rng(1)
    signal, noise = windows(1, RATE)[0], rng.standard_normal(RATE).astype(np.float32)
    for target in (20.0, 10.0, 0.0):
        mixed = c.mix_at_snr(signal, noise, target)
        measured = 10 * np.log10(np.mean(signal**2) / np.mean((mixed - signal) ** 2))
        assert measured == pytest.approx(target, abs=0.3)  # clipping to [-1, 1] shaves a little at 0 dB


def test_band_limit_mulaw_gain_clip_and_shift():
    t = np.arange(RATE) / RATE
    low, high = np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 6000 * t)
    limited = c.band_limit(((low + high) / 2).astype(np.float32), RATE, 4000.0)
    np.testing.assert_allclose(limited, low / 2, atol=1e-3)
    quiet = (0.01 * low).astype(np.float32)
    assert np.max(np.abs(c.mu_law_8bit(quiet) - quiet)) < 0.01 * 0.05  # mu-law keeps quiet audio fine
    assert np.abs(c.apply_gain(quiet, 12.0)).max() == pytest.approx(0.01 * 10**0.6, rel=1e-3)
    assert np.abs(c.apply_gain(low.astype(np.float32), 12.0)).max() == 1.0  # saturates like an ADC
    assert np.abs(c.hard_clip(low.astype(np.float32))).max() == pytest.approx(0.25)
    clip = np.arange(3 * RATE, dtype=np.float32)
    window = c.Window(clip, RATE, RATE)
    suite = c.corruption_suite([np.zeros(RATE, np.float32)], RATE)
    shifted = suite["time_shift"](window, np.random.default_rng(0))
    assert abs(shifted[0] - RATE) == c.SHIFT_SECONDS * RATE
    assert c.loudest_start(np.concatenate([np.zeros(RATE), np.ones(RATE), np.zeros(RATE)]), RATE, 250) == RATE


def test_hard_clipping_a_share_of_windows_caps_each_at_its_own_level():
    x = torch.from_numpy(windows(64, RATE))  # (64, samples)
    rng = np.random.default_rng(0)
    assert torch.equal(hard_clip_some(x, 0.0, rng), x)
    clipped = hard_clip_some(x, 1.0, rng)
    ratio = clipped.abs().amax(dim=1) / x.abs().amax(dim=1)  # each window's new peak / old peak
    assert float(ratio.min()) >= CLIP_LEVELS[0] - 1e-6 and float(ratio.max()) <= CLIP_LEVELS[1] + 1e-6
    assert float(ratio.std()) > 0.05  # a random level per window, not one for all
    half = hard_clip_some(x, 0.5, np.random.default_rng(1))
    untouched = (half == x).all(dim=1).float().mean()
    assert 0.25 < float(untouched) < 0.75


def test_backgrounds_are_mixed_into_a_share_of_windows_at_the_drawn_snr():
    backgrounds = [np.round(windows(1, 3 * RATE, seed=s)[0] * 32767).astype(np.int16) for s in (1, 2)]
    bank = ClipBank(
        [np.zeros(RATE, np.int16), *backgrounds, np.zeros(RATE, np.int16)], np.array([0, 1, 1, 1])
    )
    x = torch.from_numpy(windows(64, RATE)) * 0.5  # (64, samples), room below full scale
    rng = np.random.default_rng(0)
    assert torch.equal(mix_backgrounds(x, bank, np.array([1, 2]), 0.0, (0.0, 0.0), rng), x)
    mixed = mix_backgrounds(x, bank, np.array([1, 2]), 1.0, (10.0, 10.0), rng)
    added = (mixed - x).pow(2).mean(dim=1)  # (64,) power of what was mixed in
    assert torch.allclose(10 * torch.log10(x.pow(2).mean(dim=1) / added), torch.full((64,), 10.0), atol=0.05)
    silent = mix_backgrounds(x, bank, np.array([3]), 1.0, (0.0, 0.0), rng)  # an all-zero background clip
    assert torch.equal(silent, x)
    half = mix_backgrounds(x, bank, np.array([1, 2]), 0.5, (-5.0, 20.0), np.random.default_rng(1))
    assert 0.25 < float((half == x).all(dim=1).float().mean()) < 0.75
    loud = mix_backgrounds(x, bank, np.array([1, 2]), 1.0, (-20.0, -20.0), rng)
    assert float(loud.abs().max()) <= 1.0  # kept within the attack's bounds


def test_an_epoch_gives_long_clips_more_crops_or_every_label_an_equal_share():
    clips = [np.zeros(RATE, np.int16)] * 6 + [np.zeros(25 * RATE, np.int16)] * 2  # six 1-s, two 25-s
    bank = ClipBank(clips, np.array([0, 0, 0, 0, 0, 0, 1, 1]))
    order = bank.epoch_order(RATE, np.random.default_rng(0))
    assert sorted(np.bincount(order).tolist()) == [1, 1, 1, 1, 1, 1, 3, 3]  # one crop per started 10 s
    balanced = bank.epoch_order(RATE, np.random.default_rng(0), power=0.0)
    assert len(balanced) == 12 and np.bincount(bank.labels[balanced]).tolist() == [6, 6]
    half = bank.epoch_order(RATE, np.random.default_rng(0), power=0.5)  # shares as sqrt(6) : sqrt(6)
    assert np.bincount(bank.labels[half]).tolist() == [6, 6]
    skewed = ClipBank(clips[:1] * 9 + clips[6:7], np.array([0] * 9 + [1]))  # crops 9 : 3
    shares = np.bincount(skewed.labels[skewed.epoch_order(RATE, np.random.default_rng(0), power=0.5)])
    assert shares.tolist() == [8, 4]  # 12 crops as sqrt(9) : sqrt(3) = 3 : 1.73 -> 7.6 : 4.4


def test_fine_tuning_writes_a_measured_checkpoint_through_earshot_train(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "adv.pt"
    assert (
        train_main(
            [
                "--adversarial",
                "pgd",
                "--adv-snr",
                "40",
                "--init",
                str(tiny["checkpoint"]),
                "--data-root",
                str(tiny["us8k"]),
                "--epochs",
                "1",
                "--pgd-steps",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    tuned, init = load_checkpoint(out), load_checkpoint(tiny["checkpoint"])
    assert tuned.fold == init.fold == 2
    record = tuned.train_config["adversarial"]
    assert record["snr_db"] == 40.0 and record["attack"] == "linf" and len(record["history"]) == 1
    assert 0.0 <= tuned.metrics["accuracy"] <= 1.0
    # The initial model is measured on the same held-out clips as the tuned one.
    heldout = load_features(split_records(tiny["us8k"], init).heldout, init.frontend)
    assert len(heldout.records) and all(r.fold == 2 for r in heldout.records)
    initial = held_out_metrics(init.build(), heldout, init.frontend, AGENT_HOP_FRAMES, len(init.labels))
    assert record["init_heldout_metrics"] == initial
    changed = [k for k in init.state_dict if not torch.equal(init.state_dict[k], tuned.state_dict[k])]
    assert changed  # the weights moved


def test_frozen_norm_fine_tuning_keeps_the_batchnorm_statistics(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "frozen.pt"
    flags = ["--epochs", "1", "--pgd-steps", "2", "--frozen-norm", "--anchor-weight", "1", "--balanced"]
    flags += ["--attack", "both", "--batch-size", "4"]  # Linf and L2 PGD take turns, batch by batch
    kinds: list[str] = []
    budget = adversarial.epsilons_for
    monkeypatch.setattr(
        adversarial, "epsilons_for", lambda x, db, kind: kinds.append(kind) or budget(x, db, kind)
    )
    assert (
        main(["--init", str(tiny["checkpoint"]), "--data-root", str(tiny["us8k"]), *flags, "--out", str(out)])
        == 0
    )
    tuned, init = load_checkpoint(out), load_checkpoint(tiny["checkpoint"])
    statistics = [k for k in init.state_dict if k.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(init.state_dict[k], tuned.state_dict[k]) for k in statistics)
    weights = [k for k in init.state_dict if k.endswith("weight")]
    assert any(not torch.equal(init.state_dict[k], tuned.state_dict[k]) for k in weights)
    record = tuned.train_config["adversarial"]
    assert record["frozen_norm"] is True and record["balance_power"] == 0.0  # --balanced
    assert record["attack"] == "both" and kinds[:2] == ["linf", "l2"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adv-snr", "-3"], "--adv-snr must be in"),
        (["--attack", "l1"], "--attack must be one of"),
        (["--anchor-weight", "-1"], "--anchor-weight must be >= 0"),
        (["--clip-p", "1.5"], "--clip-p must be in [0, 1]"),
        (["--balance-power", "2"], "--balance-power must be in [0, 1]"),
        (["--background-p", "-0.1"], "--background-p must be in [0, 1]"),
        (["--background-snr", "20", "-5"], "--background-snr must be LOW HIGH"),
        (["--background-p", "0.5", "--epochs", "1"], "needs an open-set checkpoint"),
    ],
)
def test_bad_options_are_one_line_errors(tiny, capsys, args, message):
    assert main(["--init", str(tiny["checkpoint"]), "--data-root", str(tiny["us8k"]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_the_clip_bank_is_decoded_once_and_loaded_from_the_cache_after(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    checkpoint = load_checkpoint(tiny["checkpoint"])
    records = split_records(tiny["us8k"], checkpoint).train
    first = adversarial.load_bank(records, checkpoint.frontend, max_clips=6, seed=3)
    assert len(list((tmp_path / "cache").glob("bank-*.npz"))) == 1
    monkeypatch.setattr(adversarial, "decode_bank", lambda *args: pytest.fail("decoded again"))
    second = adversarial.load_bank(records, checkpoint.frontend, max_clips=6, seed=3)
    assert len(second.clips) == len(first.clips) == 6
    assert all(
        np.array_equal(a, b) and b.dtype == np.int16 for a, b in zip(first.clips, second.clips, strict=True)
    )
    assert np.array_equal(first.labels, second.labels)
    with pytest.raises(pytest.fail.Exception, match="decoded again"):  # another seed is another bank
        adversarial.load_bank(records, checkpoint.frontend, max_clips=6, seed=4)
