"""ON/OFF input (``[model] input_polarity = "on_off"``): the code, the shapes, training, saving, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stidi.api import build, encode, fit, load, predict, save
from stidi.config import load_config
from stidi.encoding import encode_images, encoded_shape, to_unit_interval, ttfs_encode
from stidi.errors import ConfigError


@given(st.lists(st.integers(0, 255), min_size=1, max_size=60), st.floats(0.05, 1.0), st.sampled_from([16, 256]))
def test_off_channel_is_the_complement_coded_with_the_same_curve(pixels, power, T):
    x = np.array(pixels, dtype=np.uint8).reshape(1, 1, 1, -1)
    t = encode_images(x, (1, 1, x.shape[-1]), T, power, "on_off")
    assert t.shape == (1, 2, 1, x.shape[-1])
    on, off = t[:, 0], t[:, 1]
    assert torch.equal(on, ttfs_encode(x, T, power=power)[:, 0])
    assert torch.equal(off, ttfs_encode(1.0 - to_unit_interval(x), T, power=power)[:, 0])
    flat = x.reshape(-1)
    assert torch.equal(torch.isinf(off.reshape(-1)), torch.as_tensor(flat == 255))  # only white is silent there
    assert bool((off.reshape(-1)[flat == 0] == 0).all())  # black fires at once in the OFF channel
    assert bool(torch.isfinite(torch.minimum(on, off)).all())  # every pixel fires in at least one channel
    fired = flat < 255
    order = np.argsort(flat[fired], kind="stable")
    assert bool((torch.diff(off.reshape(-1)[fired][order]) >= 0).all())  # darker never fires later in OFF


def test_plain_polarity_is_the_plain_code():
    x = np.random.default_rng(0).integers(0, 256, size=(3, 1, 5, 5), dtype=np.uint8)
    assert torch.equal(encode_images(x, (1, 5, 5), 64, 0.5, "on"), ttfs_encode(x, 64, power=0.5))


@pytest.mark.parametrize("shape, want", [((1, 28, 28), (2, 28, 28)), ((3, 8, 8), (6, 8, 8)), ((784,), (1568,))])
def test_encoded_shape_doubles_the_channels_or_the_flat_size(shape, want):
    assert encoded_shape(shape, "on_off") == want
    assert encoded_shape(shape, "on") == shape


def test_on_off_network_takes_images_and_feeds_twice_the_channels():
    conv = build("4C5-P2-10", (1, 28, 28), input_polarity="on_off")
    assert conv.input_shape == (1, 28, 28) and conv.encoded_shape == (2, 28, 28)
    assert tuple(conv.weights[0].shape) == (4, 2, 5, 5)
    dense = build("16-10", (784,), input_polarity="on_off")
    assert tuple(dense.weights[0].shape) == (16, 1568)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    assert encode(conv, images).shape == (2, 2, 28, 28)


def test_on_off_trains_saves_and_loads_back_to_the_same_predictions(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    labels = np.arange(64) % 10
    net, history = fit("4C5-P2-10", images, labels, T=32, epochs=1, input_power=0.25, input_polarity="on_off", threads=1)
    assert history and net.input_polarity == "on_off"
    save(tmp_path / "m", net)
    back = load(tmp_path / "m.safetensors")
    assert back.input_polarity == "on_off" and back.encoded_shape == (2, 28, 28)
    assert torch.equal(encode(back, images), encode(net, images))
    assert torch.equal(predict(back, images).classes, predict(net, images).classes)


def test_unknown_polarity_is_named_in_the_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[model]\ninput_polarity = "off"\n')
    with pytest.raises(ConfigError, match="input_polarity"):
        load_config(path)
    with pytest.raises(ConfigError, match="input_polarity"):
        encoded_shape((1, 28, 28), "off")


def test_flat_spec_naming_the_image_size_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text('[model]\nnetwork = "784-16-10"\ninput_shape = [784]\ninput_polarity = "on_off"\n')
    with pytest.raises(ConfigError, match="1568-16-10"):
        load_config(path)
    with pytest.raises(ConfigError, match="1568-16-10"):
        build("784-16-10", (784,), input_polarity="on_off")
    assert tuple(build("1568-16-10", (784,), input_polarity="on_off").weights[0].shape) == (16, 1568)


def test_nir_export_declares_the_encoded_input_and_the_polarity():
    pytest.importorskip("nir")
    from stidi.export_nir import differences, to_nir

    net = build("4C5-P2-10", (1, 28, 28), input_polarity="on_off")
    graph = to_nir(net)
    assert list(graph.nodes["input"].input_type["input"]) == [2, 28, 28]
    assert graph.metadata["input_polarity"] == "on_off"
    assert any("ON/OFF" in line for line in differences(net))
