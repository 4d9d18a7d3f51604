"""Augmentation: exact translations and mirror images, reproducible moves, training that uses them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from stidi.api import build, encode, fit, load, predict, save
from stidi.augment import epoch_moves, epoch_shifts, move_images, shift_images
from stidi.config import load_config
from stidi.encoding import ttfs_encode
from stidi.errors import StidiError
from stidi.train import Dataset, train


def _naive_shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(image)
    height, width = image.shape[-2:]
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[..., y, x] = image[..., y - dy, x - dx]
    return out


@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), st.booleans(), st.integers(0, 3), st.integers(0, 2**31 - 1))
def test_shift_matches_pixel_by_pixel_translation(n, height, width, channels, max_shift, seed):
    rng = np.random.default_rng(seed)
    shape = (n, 2, height, width) if channels else (n, height, width)
    images = rng.integers(1, 256, size=shape, dtype=np.uint8)
    shifts = torch.as_tensor(rng.integers(-max_shift, max_shift + 1, size=(n, 2)))
    got = shift_images(images, shifts).numpy()
    for k in range(n):
        assert np.array_equal(got[k], _naive_shift(images[k], *shifts[k].tolist()))


def test_epoch_shifts_are_reproducible_bounded_and_change_each_epoch():
    a, b = epoch_shifts(5000, 2, seed=3, epoch=1), epoch_shifts(5000, 2, seed=3, epoch=1)
    assert torch.equal(a, b)
    assert int(a.min()) == -2 and int(a.max()) == 2
    assert not torch.equal(a, epoch_shifts(5000, 2, seed=3, epoch=2))
    assert not torch.equal(a, epoch_shifts(5000, 2, seed=4, epoch=1))


def test_flat_images_are_refused_with_a_hint():
    with pytest.raises(StidiError, match="augment_shift = 0"):
        shift_images(np.ones((3, 784), dtype=np.uint8), torch.zeros(3, 2, dtype=torch.long))


def test_dataset_encodes_the_shifted_images():
    images = np.random.default_rng(0).integers(0, 256, size=(4, 6, 6), dtype=np.uint8)
    data = Dataset(images, np.zeros(4, dtype=np.int64))
    moves = torch.tensor([[1, 0, 0], [0, -1, 1], [2, 2, 1], [0, 0, 0]])
    idx = torch.tensor([2, 0, 3])
    net = build("2C3-10", (1, 6, 6), T=32)
    got = data.spike_times(idx, net, moves[idx])
    want = Dataset(move_images(images[[2, 0, 3]], moves[idx]).numpy(), np.zeros(3)).spike_times(slice(None), net)
    assert torch.equal(got, want)


@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), st.booleans(), st.integers(0, 2), st.integers(0, 2**31 - 1))
def test_moves_mirror_then_translate(n, height, width, channels, max_shift, seed):
    rng = np.random.default_rng(seed)
    shape = (n, 2, height, width) if channels else (n, height, width)
    images = rng.integers(1, 256, size=shape, dtype=np.uint8)
    moves = torch.as_tensor(np.concatenate([rng.integers(-max_shift, max_shift + 1, size=(n, 2)),
                                            rng.integers(0, 2, size=(n, 1))], axis=1))
    got = move_images(images, moves).numpy()
    for k in range(n):
        dy, dx, mirrored = moves[k].tolist()
        source = images[k][..., ::-1] if mirrored else images[k]
        assert np.array_equal(got[k], _naive_shift(source, dy, dx))


def test_epoch_moves_keep_the_offsets_and_mirror_about_half():
    assert epoch_moves(100, 0, False, seed=0, epoch=0) is None
    moves = epoch_moves(5000, 2, True, seed=3, epoch=1)
    assert torch.equal(moves[:, :2], epoch_shifts(5000, 2, seed=3, epoch=1))  # flipping leaves the offsets alone
    assert 2300 < int(moves[:, 2].sum()) < 2700 and set(moves[:, 2].tolist()) == {0, 1}
    assert torch.equal(moves, epoch_moves(5000, 2, True, seed=3, epoch=1))
    assert not torch.equal(moves[:, 2], epoch_moves(5000, 2, True, seed=3, epoch=2)[:, 2])
    flips_only = epoch_moves(5000, 0, True, seed=3, epoch=1)
    assert not bool(flips_only[:, :2].any()) and torch.equal(flips_only[:, 2], moves[:, 2])


def test_flat_images_cannot_be_mirrored():
    with pytest.raises(StidiError, match="augment_flip = false"):
        move_images(np.ones((3, 784), dtype=np.uint8), torch.tensor([[0, 0, 1]] * 3))


def _run(tmp_path, name, shift, flip=False):
    config = load_config(None, {"model": {"network": "4C5-P2-10", "T": 32},
                                "train": {"train_limit": 96, "test_limit": 32, "batch_size": 16, "epochs": 2,
                                          "augment_shift": shift, "augment_flip": flip, "threads": 1}})
    train(config, tmp_path / name, progress=False, log=lambda m: None)
    return load_file(tmp_path / name / "model.safetensors")


def test_training_with_shifts_is_reproducible_and_differs_from_no_shifts(tmp_path):
    shifted, again, plain = _run(tmp_path, "a", 2), _run(tmp_path, "b", 2), _run(tmp_path, "c", 0)
    assert all(torch.equal(shifted[k], again[k]) for k in shifted)
    assert any(not torch.equal(shifted[k], plain[k]) for k in shifted)


def test_training_with_mirror_images_is_reproducible_and_differs_from_none(tmp_path):
    mirrored, again, plain = _run(tmp_path, "a", 0, True), _run(tmp_path, "b", 0, True), _run(tmp_path, "c", 0)
    assert all(torch.equal(mirrored[k], again[k]) for k in mirrored)
    assert any(not torch.equal(mirrored[k], plain[k]) for k in mirrored)


@given(st.lists(st.integers(0, 255), min_size=1, max_size=50), st.floats(0.05, 1.0), st.sampled_from([16, 256]))
def test_input_power_keeps_order_and_silence_and_never_delays(pixels, power, T):
    x = np.array(pixels, dtype=np.uint8)
    plain, curved = ttfs_encode(x, T), ttfs_encode(x, T, power=power)
    assert torch.equal(torch.isinf(curved), torch.as_tensor(x == 0))  # black never fires, every other pixel does
    fired = x > 0
    assert bool((curved[fired] <= plain[fired]).all())  # p ≤ 1 only moves spikes earlier
    order = np.argsort(x[fired], kind="stable")
    assert bool((torch.diff(curved[fired][order]) <= 0).all())  # brighter never fires later


def test_input_power_travels_with_the_saved_model(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    net, _ = fit("4C5-P2-10", images, labels, T=32, epochs=1, input_power=0.25, threads=1)
    save(tmp_path / "m", net)
    back = load(tmp_path / "m.safetensors")
    assert back.input_power == 0.25
    assert torch.equal(encode(back, images), ttfs_encode(images, 32, power=0.25).reshape(-1, 1, 28, 28))
    assert torch.equal(predict(back, images).classes, predict(net, images).classes)
