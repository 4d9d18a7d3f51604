"""The user tools on a model trained by ``stidi train``: predict, inspect, plot, export.

One tiny MNIST model is trained once per module (seconds) and every command runs on it
through the real CLI entry point.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stidi.cli import main
from stidi.data import load_dataset

TINY = ["--network", "8C5-P2-10", "--T", "64", "--train-limit", "300", "--test-limit", "200",
        "--epochs", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tools") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["train", *TINY, "--out", str(out), "--plots"]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads 1 must not slow the rest of the session
    return out


@pytest.fixture(scope="module")
def mnist_test():
    images, labels = load_dataset("mnist", "test")
    return images[:20], labels[:20]


def _json_out(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_reads_png_npy_and_idx_alike(run_dir, mnist_test, tmp_path, capsys):
    from PIL import Image

    from stidi.io import load_model

    images, _ = mnist_test
    Image.fromarray(images[3]).save(tmp_path / "digit.png")
    Image.fromarray(255 - images[3]).save(tmp_path / "dark-on-light.png")
    np.save(tmp_path / "batch.npy", images[:4])
    np.save(tmp_path / "floats.npy", images[:4].astype(np.float32) / 255)
    idx = tmp_path / "images-idx3-ubyte"
    idx.write_bytes(bytes([0, 0, 8, 3]) + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images[:4].tobytes())
    out = _json_out(capsys, ["predict", str(run_dir), str(tmp_path / "digit.png"), str(tmp_path / "batch.npy"),
                             str(tmp_path / "floats.npy"), str(idx), "--json"])
    rows = out["predictions"]
    assert [r["input"].rsplit("/", 1)[-1] for r in rows[:2]] == ["digit.png", "batch.npy[0]"]
    assert len(rows) == 13 and out["T"] == 64
    # the same image gives the same answer whichever file type carried it
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in rows}
    for key in ("class", "decision_time", "output_times"):
        assert by_name["digit.png"][key] == by_name["batch.npy[3]"][key] == by_name["floats.npy[3]"][key] \
            == by_name["images-idx3-ubyte[3]"][key]
    # and the same as the library's own prediction
    net = load_model(run_dir)[0]
    from stidi.api import predict

    pred = predict(net, images[:4])
    assert [r["class"] for r in rows[1:5]] == pred.classes.tolist()
    assert [r["decision_time"] for r in rows[1:5]] == pred.decision_time.tolist()
    expected = [[None if math.isinf(t) else t for t in row] for row in pred.output_times.tolist()]
    assert [r["output_times"] for r in rows[1:5]] == expected
    # --invert turns a dark digit on a light background into the MNIST polarity
    inv = _json_out(capsys, ["predict", str(run_dir), str(tmp_path / "dark-on-light.png"), "--invert", "--json"])
    assert inv["predictions"][0]["class"] == by_name["digit.png"]["class"]
    # text output: one line per input with class and decision time
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(tmp_path / "digit.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert "digit.png" in line and "decision t=" in line and line.count("\n") == 0


@pytest.mark.parametrize("make, message", [
    (lambda p: np.save(p / "x.npy", np.zeros((3, 5))), "does not fit the model's input shape"),
    (lambda p: np.save(p / "x.npy", np.full((28, 28), 2.0)), "rescale"),
    (lambda p: (p / "x.png").write_bytes(b"not a png"), "cannot read the image"),
    (lambda p: (p / "x.txt").write_text("hello"), "unknown input type"),
    (lambda p: None, "no such file"),
])
def test_predict_bad_inputs_give_one_line_naming_the_file(run_dir, tmp_path, capsys, make, message):
    make(tmp_path)
    name = next((p.name for p in tmp_path.iterdir()), "missing.png")
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and name in err and err.count("\n") == 0


def test_inspect_counts_spikes_and_synaptic_ops_exactly(run_dir, capsys):
    from stidi.analysis import inspect_network
    from stidi.encoding import ttfs_encode
    from stidi.io import load_model

    report = _json_out(capsys, ["inspect", str(run_dir), "--limit", "50", "--json"])
    assert report["images"] == 50 and [e["layer"] for e in report["layers"]] == ["input", "8C5", "P2", "10"]
    net = load_model(run_dir)[0]
    images, labels = load_dataset("mnist", "test")
    t_in = ttfs_encode(images[:50], net.T).reshape(-1, 1, 28, 28)
    trace = net.trace(t_in)
    # brute force: every input spike before T, times the output neurons it reaches
    conv_ops = 0
    for b in range(50):
        for y, x in zip(*np.nonzero(t_in[b, 0].numpy() < net.T)):
            reach = sum(1 for oy in range(24) for ox in range(24) if 0 <= y - oy < 5 and 0 <= x - ox < 5)
            conv_ops += 8 * reach
    dense_ops = 10 * int((trace.times[2] < net.T).sum())
    conv, pool, dense = report["layers"][1:]
    assert conv["synaptic_ops_per_inference"] == pytest.approx(conv_ops / 50)
    assert dense["synaptic_ops_per_inference"] == pytest.approx(dense_ops / 50)
    assert conv["cnn_macs"] == 8 * 24 * 24 * 25 and dense["cnn_macs"] == 8 * 12 * 12 * 10
    assert conv["spikes_per_inference"] == pytest.approx(float((trace.times[1] < net.T).sum()) / 50)
    assert report["layers"][0]["fraction_firing"] == pytest.approx(float((t_in < net.T).float().mean()))
    fired = trace.times[1][trace.times[1] < net.T]
    assert conv["mean_firing_time"] == pytest.approx(float(fired.double().mean()))
    # spike-time quantiles: the first step by which that share of the layer's spikes has come
    for share, step in conv["firing_time_quantiles"].items():
        q = float(share.rstrip("%")) / 100
        assert float((fired <= step).double().mean()) >= q - 1e-9 > float((fired <= step - 1).double().mean()) - 1e-9
    out = trace.times[-1].clamp(max=net.T).sort(dim=1).values
    gap = (out[:, 1] - out[:, 0]).double()
    assert report["decision"]["runner_up_gap_quantiles"]["50%"] == pytest.approx(float(gap.quantile(0.5)))
    d = report["decision"]
    pred = net.predict(t_in)
    assert d["accuracy"] == pytest.approx(float((pred.classes == torch.as_tensor(labels[:50])).float().mean()))
    assert d["mean_decision_time"] == pytest.approx(float(pred.decision_time.clamp(max=net.T).mean()))
    assert d["undecided"] == pytest.approx(float((pred.classes == -1).double().mean()))
    # stopping at the first output spike never changes the class: causality of single spikes
    assert d["early_exit_same_class"] == 1.0 and d["early_exit_accuracy"] == d["accuracy"]
    assert report["totals"]["synaptic_ops_to_decision"] <= report["totals"]["synaptic_ops_per_inference"]
    # the text report has a row per layer and the decision summary
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--limit", "20"]) == 0
    text = capsys.readouterr().out
    assert "8C5" in text and "early exit" in text and "CNN MACs" in text and "of the images undecided" in text
    assert inspect_network(net, t_in[:5])["decision"]["accuracy"] is None


def test_inspect_refuses_data_of_another_shape(tmp_path, capsys):
    import stidi.api as st

    net = st.build("2C3-4", (3, 8, 8))
    st.save(tmp_path / "m", net)
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--data", "mnist"]) == 2
    assert "pass --data FILE" in capsys.readouterr().err


# --------------------------------------------------------------------------- NIR export


def simulate_nir(graph, t_in: torch.Tensor, T: int) -> dict[str, torch.Tensor]:
    """Integrate a chain-shaped NIR graph exactly at integer steps 0..T, single-spike neurons.

    ``I`` nodes turn weighted spikes into step currents; an ``IF`` fed by an ``I``
    integrates that piecewise-constant current over (t − 1, t], an ``IF`` fed by
    spikes (pooling) integrates the spikes arriving at t. A neuron fires once, at the
    first step where v ≥ v_threshold (the metadata's rule). Returns each IF's spike times.
    """
    import torch.nn.functional as F

    order = ["input"]
    nxt = dict(graph.edges)
    while order[-1] in nxt:
        order.append(nxt[order[-1]])
    state: dict[str, dict] = {}
    times: dict[str, torch.Tensor] = {}
    for t in range(T + 1):
        x = (t_in == t).double()
        for name in order[1:]:
            node = graph.nodes[name]
            kind = type(node).__name__
            if kind == "Conv2d":
                x = F.conv2d(x, torch.as_tensor(node.weight), padding=tuple(int(p) for p in node.padding))
            elif kind == "Flatten":
                x = x.flatten(1)
            elif kind == "Linear":
                x = x @ torch.as_tensor(node.weight).T
            elif kind == "SumPool2d":
                x = F.avg_pool2d(x, tuple(int(k) for k in node.kernel_size)) * int(np.prod(node.kernel_size))
            elif kind == "I":
                st = state.setdefault(name, {"c": torch.zeros_like(x)})
                before = st["c"]
                st["c"] = before + torch.as_tensor(node.r) * x
                x = before  # current on (t − 1, t]
            elif kind == "IF":
                st = state.setdefault(name, {"v": torch.zeros_like(x), "fired": torch.zeros_like(x, dtype=torch.bool)})
                st["v"] = st["v"] + torch.as_tensor(node.r) * x
                spike = (st["v"] >= torch.as_tensor(node.v_threshold)) & ~st["fired"]
                st["fired"] |= spike
                tt = times.setdefault(name, torch.full(x.shape, math.inf, dtype=torch.float64))
                tt[spike] = t
                x = spike.double()
    return times


def test_export_nir_reads_back_and_reproduces_spike_times(run_dir, tmp_path, capsys):
    import nir

    from stidi.encoding import ttfs_encode
    from stidi.io import load_model

    out = tmp_path / "model.nir"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "nir", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    assert "stidi: warning:" in captured.err and "at most once" in captured.err and "docs/nir.md" in captured.out
    graph = nir.read(str(out))
    net = load_model(run_dir)[0]
    kinds = [type(graph.nodes[b]).__name__ for a, b in graph.edges]
    assert kinds == ["Conv2d", "I", "IF", "SumPool2d", "IF", "Flatten", "Linear", "I", "IF", "Output"]
    conv = graph.nodes["1_8C5_conv"]
    assert np.array_equal(conv.weight, net.weights[0].double().numpy())
    assert np.array_equal(graph.nodes["3_10_linear"].weight, net.weights[1].double().numpy())
    assert float(graph.metadata["T"]) == net.T and int(graph.nodes["3_10_if"].metadata["single_spike"]) == 1
    assert np.all(graph.nodes["1_8C5_if"].v_threshold == net.thresholds[0])
    # a NIR simulator that honours the metadata gets stidi's spike times in every layer
    images, _ = load_dataset("mnist", "test")
    t_in = ttfs_encode(images[:20], net.T).reshape(-1, 1, 28, 28)
    trace = net.trace(t_in)
    sim = simulate_nir(graph, t_in.double(), net.T)
    for name, k in (("1_8C5_if", 1), ("2_P2_if", 2), ("3_10_if", 3)):
        assert torch.equal(sim[name], trace.times[k].double()), name
    # default output path: beside the model
    assert main(["export", str(run_dir / "model.safetensors")]) == 0
    assert (run_dir / "model.nir").exists()


# --------------------------------------------------------------------------- plots


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_train_plots_and_plot_command_write_pngs(run_dir, tmp_path, capsys):
    names = ["learning_curves.png", "confusion.png", "firing_times.png", "decision_times.png", "raster.png", "spike_maps.png"]
    for name in names:  # written by 'train --plots' in the fixture
        w, h = _png_size(run_dir / "plots" / name)
        assert w > 300 and h > 200
    capsys.readouterr()
    assert main(["plot", str(run_dir / "model.safetensors"), "--out", str(tmp_path), "--limit", "50", "--image", "7"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(tmp_path / n) for n in names)
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "one"), "--which", "raster"]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["raster.png"]


def test_plot_errors_are_one_line(run_dir, tmp_path, capsys, monkeypatch):
    images, _ = load_dataset("mnist", "test")
    np.save(tmp_path / "x.npy", images[:5])
    capsys.readouterr()
    assert main(["plot", str(run_dir), "--data", str(tmp_path / "x.npy"), "--which", "confusion", "--out", str(tmp_path)]) == 2
    assert "needs labels" in capsys.readouterr().err
    assert main(["plot", str(run_dir), "--data", str(tmp_path / "x.npy"), "--which", "decisions", "--out", str(tmp_path)]) == 2
    assert "needs labels" in capsys.readouterr().err
    # all plots on unlabelled data: the two that need labels are skipped with a note, the rest written
    assert main(["plot", str(run_dir), "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "all")]) == 0
    assert "skipped confusion matrix" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "firing_times.png", "learning_curves.png", "raster.png", "spike_maps.png"]
    assert main(["plot", str(run_dir), "--data", str(tmp_path / "x.npy"), "--which", "raster", "--image", "9"]) == 2
    assert "the data has 5 images" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    assert main(["plot", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install matplotlib" in err and err.count("\n") == 0
    monkeypatch.setitem(__import__("sys").modules, "nir", None)
    assert main(["export", str(run_dir)]) == 2
    assert "pip install nir" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "inspect", "plot", "export"])
def test_tool_help_explains_every_option(command):
    import argparse

    from stidi.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert sub.description
    for action in sub._actions:
        assert action.help and len(action.help) > 10, f"{command}: {action.option_strings or action.dest} has no help"
