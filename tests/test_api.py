"""The high-level API on data that is not MNIST: 3-channel 16×16 images, three classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stidi.api as st
from stidi.cli import main
from stidi.errors import ConfigError, DataError


def patterns(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy RGB images whose class is a bright patch in a class-specific channel and place."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    for i, c in enumerate(y):
        if c == 0:
            x[i, 0, 2:8, 2:8] = rng.uniform(0.7, 1.0)
        elif c == 1:
            x[i, 1, 8:14, 8:14] = rng.uniform(0.7, 1.0)
        else:
            x[i, 2, :, 6:10] = rng.uniform(0.7, 1.0)
    return x, y


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    x, y = patterns(300, 0)
    xt, yt = patterns(100, 1)
    data = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))  # any torch Dataset of pairs
    out = tmp_path_factory.mktemp("api") / "run"
    threads = torch.get_num_threads()
    try:
        net, history = st.fit("4C5-P2-3", data, test=(xt, yt), out_dir=out, epochs=1, T=32, threads=1, batch_size=16)
    finally:
        torch.set_num_threads(threads)
    return net, history, out, (xt, yt)


def test_fit_and_predict_on_rgb_16x16(trained):
    net, history, out, (xt, yt) = trained
    assert net.input_shape == (3, 16, 16) and net.T == 32
    pred = st.predict(net, xt)
    assert pred.classes.shape == (100,) and pred.output_times.shape == (100, 3) and pred.decision_time.shape == (100,)
    accuracy = float((pred.classes.numpy() == yt).mean())
    assert accuracy == pytest.approx(history[-1]["test_accuracy"])
    assert accuracy > 0.7  # chance is 1/3
    # decision time is the earliest output spike (T when no output fired)
    assert torch.equal(pred.decision_time, pred.output_times.clamp(max=net.T).min(dim=1).values)
    # one image, channels first, gives the same answer as in the batch
    one = st.predict(net, xt[5])
    assert one.classes.tolist() == pred.classes[5:6].tolist()
    assert (out / "model.safetensors").exists() and (out / "metrics.jsonl").exists()


def test_saved_model_works_with_the_cli(trained, tmp_path, capsys):
    from PIL import Image

    net, _, out, (xt, yt) = trained
    np.save(tmp_path / "x.npy", xt[:10])
    np.save(tmp_path / "y.npy", yt[:10])
    Image.fromarray((xt[2].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(tmp_path / "rgb.png")
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "x.npy"), str(tmp_path / "rgb.png"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    assert [r["class"] for r in rows[:10]] == st.predict(net, xt[:10]).classes.tolist()
    assert rows[10]["class"] == rows[2]["class"]
    assert main(["inspect", str(out), "--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 10 and report["layers"][0]["shape"] == [3, 16, 16]
    assert report["layers"][1]["cnn_macs"] == 4 * 12 * 12 * 3 * 25


def test_save_and_load_round_trip(trained, tmp_path):
    net, _, _, (xt, _) = trained
    st.save(tmp_path / "copy", net)
    again = st.load(tmp_path / "copy.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.weights, again.weights))
    assert torch.equal(st.predict(again, xt).classes, st.predict(net, xt).classes)


def test_build_any_shape_and_clear_errors(tmp_path):
    net = st.build("6C3-P2-5", (2, 10, 12), T=40)
    assert net.shapes[-1] == (5,) and net.shapes[1] == (6, 8, 10) and net.T == 40
    from stidi.config import load_config

    toml = tmp_path / "net.toml"
    toml.write_text('[model]\nnetwork = "3C3-4"\ninput_shape = [2, 6, 6]\nT = 20\n')
    from_file = st.build(load_config(toml))
    assert from_file.shapes == [(2, 6, 6), (3, 4, 4), (4,)] and from_file.T == 20
    assert st.build(load_config(toml), T=30).T == 30
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        st.make_config("10", (1, 4, 4), epoch=3)
    with pytest.raises(DataError, match="do not match the network's input shape"):
        st.predict(net, np.zeros((4, 3, 10, 12)))
    with pytest.raises(DataError, match="scale them to"):
        st.as_dataset(np.full((4, 1, 4, 4), 3.0), [0, 1, 0, 1])
    with pytest.raises(ConfigError, match="labels go up to 7"):
        st.fit("4", np.zeros((8, 1, 4, 4)), np.arange(8), epochs=1)


def test_binary_network_saves_and_exports_its_forward_weights(tmp_path):
    import nir

    from stidi.export_nir import export_nir

    x, _ = patterns(64, 2)
    net = st.build("4C5-P2-3", (3, 16, 16), T=32, binary=True)
    net.initialise(st.encode(net, x), 0.3, torch.Generator().manual_seed(0))
    st.save(tmp_path / "bin", net)
    again = st.load(tmp_path / "bin.safetensors")
    assert all(again.binary)
    assert torch.equal(st.predict(again, x).output_times, st.predict(net, x).output_times)
    export_nir(net, tmp_path / "bin.nir")
    graph = nir.read(str(tmp_path / "bin.nir"))
    conv = graph.nodes["1_4C5_conv"].weight
    assert np.array_equal(conv, net.weight_of(0).double().numpy())
    assert len(np.unique(np.abs(conv))) == 1  # α · sign(w): one magnitude
    assert int(graph.nodes["1_4C5_conv"].metadata["binary"]) == 1
    assert float(graph.nodes["1_4C5_conv"].metadata["alpha"]) == pytest.approx(float(np.abs(conv).max()))


def test_learnt_channel_scales_save_and_export_one_alpha_per_channel(tmp_path):
    import nir

    from stidi.export_nir import export_nir

    x, _ = patterns(64, 2)
    net = st.build("4C5-P2-3", (3, 16, 16), T=32, binary=True, binary_scale="channel")
    net.initialise(st.encode(net, x), 0.3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.channel_scales[0].mul_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    st.save(tmp_path / "bin", net)
    again = st.load(tmp_path / "bin.safetensors")
    assert again.binary_scale == "channel"
    assert torch.equal(st.predict(again, x).output_times, st.predict(net, x).output_times)
    export_nir(net, tmp_path / "bin.nir")
    alpha = nir.read(str(tmp_path / "bin.nir")).nodes["1_4C5_conv"].metadata["alpha"]
    assert list(np.asarray(alpha, dtype=float)) == pytest.approx(net.channel_scales[0].double().tolist())
    assert len(alpha) == 4


def test_fit_raises_the_trainers_warnings_as_runtime_warnings(tmp_path):
    """fit() drops progress lines but not warnings: a script or notebook sees them."""
    x, y = patterns(40, 2)
    threads = torch.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match=r"^train.binary_clip = 3 has no effect"):
            st.fit("4C5-P2-3", x, y, out_dir=tmp_path / "run", epochs=1, T=32, threads=1, batch_size=16, binary_clip=3.0)
    finally:
        torch.set_num_threads(threads)
