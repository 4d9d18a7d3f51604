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
    assert main(["train", *TINY, "--out", str(out)]) == 0
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
    d = report["decision"]
    pred = net.predict(t_in)
    assert d["accuracy"] == pytest.approx(float((pred.classes == torch.as_tensor(labels[:50])).float().mean()))
    assert d["mean_decision_time"] == pytest.approx(float(pred.decision_time.clamp(max=net.T).mean()))
    # stopping at the first output spike never changes the class: causality of single spikes
    assert d["early_exit_same_class"] == 1.0 and d["early_exit_accuracy"] == d["accuracy"]
    assert report["totals"]["synaptic_ops_to_decision"] <= report["totals"]["synaptic_ops_per_inference"]
    # the text report has a row per layer and the decision summary
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--limit", "20"]) == 0
    text = capsys.readouterr().out
    assert "8C5" in text and "early exit" in text and "CNN MACs" in text
    assert inspect_network(net, t_in[:5])["decision"]["accuracy"] is None


def test_inspect_refuses_data_of_another_shape(tmp_path, capsys):
    import stidi.api as st

    net = st.build("2C3-4", (3, 8, 8))
    st.save(tmp_path / "m", net)
    assert main(["inspect", str(tmp_path / "m.safetensors"), "--data", "mnist"]) == 2
    assert "pass --data FILE" in capsys.readouterr().err
