"""Write docs/results.md (and its learning-curve PNG) from results/accuracy.json, results/ablation.json and results/sweep-*.json.

Usage: python benchmarks/render_results.py

It also rewrites the table between the ``<!-- reproduction:start/end -->`` markers of
README.md.

Every figure in the page comes from those files, which the committed scripts
``benchmarks/reproduce.py``, ``benchmarks/ablation.py`` and ``benchmarks/sweep.py`` write; nothing is typed in
by hand except the published figures of the paper and its neighbours, quoted with
their source.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
CURVES = ROOT / "docs" / "images" / "learning-curves.png"

#: name -> (dataset, network description, binary, target, published figures for comparison)
TARGETS = {
    "mnist-rcsnn": ("MNIST", False, 0.992, "paper R-CSNN 99.2 %"),
    "fashion-rcsnn": ("Fashion-MNIST", False, 0.928, "paper R-CSNN 92.8 %"),
    "mnist-bcsnn": ("MNIST", True, 0.986, "paper B-CSNN ≈ 98.6 %; BS4NN 97.0 %"),
    "fashion-bcsnn": ("Fashion-MNIST", True, 0.920, "paper B-CSNN ≈ 92.0 %; BS4NN 87.3 %"),
    "mnist-fc": ("MNIST", False, 0.974, "S4NN 784-400-10: 97.4 %"),
}

#: dataset name in configs -> as tables and plots print it
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def epochs_run(r: dict) -> str:
    """The epochs a run has trained, with those it planned when it stopped early (``17 of 20``)."""
    planned = r.get("epochs_planned")
    return f"{r['epochs']} of {planned}" if planned and planned != r["epochs"] else str(r["epochs"])


def family(target: str, name: str) -> bool:
    """Whether run ``name`` is a candidate for ``target``: the target's own name or a variant of it (``fashion-rcsnn-…``)."""
    return name == target or name.startswith(target + "-")


def kept_runs(runs: dict[str, dict]) -> dict[str, dict]:
    """The run kept for each target: of the finished runs named after it that held out a validation split, the one
    with the highest validation accuracy (the target's own run on a tie). The test set chooses nothing: a variant
    replaces the target's run only by validation accuracy, the protocol of docs/fashion-mnist.md, and a run stopped
    before its schedule ended is not judged."""
    kept = {}
    for target in TARGETS:
        candidates = [r for name, r in runs.items() if family(target, name) and r.get("val_accuracy") is not None
                      and r["epochs"] >= (r.get("epochs_planned") or r["epochs"])]
        if candidates:
            kept[target] = max(candidates, key=lambda r: (r["val_accuracy"], r["name"] == target))
    return kept


def accuracy_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| target (kept run) | data | network | binary | epochs run | best epoch (by validation) | validation accuracy | test accuracy | target | reached | training time (threads) | published |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    kept = kept_runs(runs)
    for name, (dataset, binary, target, published) in TARGETS.items():
        r = kept.get(name)
        if r is None:
            lines.append(f"| {name} | {dataset} | — | {'yes' if binary else 'no'} | not run yet | — | — | — | {pct(target)} | — | — | {published} |")
            continue
        label = name if r["name"] == name else f"{name} (`{r['name']}`)"
        reached = "yes" if r["test_accuracy"] >= target else "no"
        lines.append(f"| {label} | {dataset} | `{r['network']}` | {'yes' if r['binary'] else 'no'} | {epochs_run(r)} | "
                     f"{r['best_epoch']} | {pct(r['val_accuracy'])} | **{pct(r['test_accuracy'])}** | {pct(target)} | {reached} | "
                     f"{r['train_seconds'] / 60:.0f} min ({r.get('threads', '?')}) | {published} |")
    return lines


def other_runs_table(runs: dict[str, dict]) -> list[str]:
    """Runs of ``results/accuracy.json`` not kept for a target: variants of a kept recipe (e.g. trained on every
    training image) and target runs a variant replaced, with what their config held out; empty when there are none."""
    kept = {r["name"] for r in kept_runs(runs).values()}
    others = [r for name, r in sorted(runs.items()) if name not in kept]
    if not others:
        return []
    lines = ["Runs not kept for a target: variants of a recipe, each named in its config's header "
             "(`benchmarks/configs/NAME.toml`), and target runs that a variant with a higher validation accuracy replaced. "
             "A run that holds out no validation images keeps its last epoch, as `stidi train` does, and cannot be kept "
             "for a target; the test set chooses nothing.", "",
             "| run | data | network | training images held out | epochs run | epoch kept | validation accuracy | test accuracy | training time (threads) |",
             "|---|---|---|---:|---|---|---|---|---|"]
    for r in others:
        config = run_config(r["name"])
        held_out = f"{config.train.validation:,}" if config is not None else "—"
        lines.append(f"| {r['name']} | {DATASET_NAMES.get(r['dataset'], r['dataset'])} | `{r['network']}` | {held_out} | {epochs_run(r)} | {r['best_epoch']} | "
                     f"{pct(r.get('val_accuracy'))} | **{pct(r['test_accuracy'])}** | {r['train_seconds'] / 60:.0f} min ({r.get('threads', '?')}) |")
    return lines


def ablation_table(ablation: dict) -> list[str]:
    rows = ablation.get("summary", [])
    if not rows:
        return ["No ablation has been run yet (`python benchmarks/ablation.py`)."]
    out = []
    budgets = []
    for r in rows:
        if r["budget"] not in budgets:
            budgets.append(r["budget"])
    for b in budgets:
        base = f"`{b['base']}`" if b.get("base") else "the default configuration (`src/stidi/config.py`)"
        runs = [r for r in ablation.get("runs", []) if r["budget"] == b and r["variant"] == "specification defaults"]
        if runs:
            c = runs[0]["config"]
            base += (f" as of commit `{runs[0]['commit'][:7]}` (γ = {c['rule']['gamma']:g}, lr {c['train']['lr']}, "
                     f"batch {c['train']['batch_size']})")
        out += [f"Budget: `{b['network']}`, first {b['images']:,} MNIST training images, {b['epochs']} epochs, starting from "
                f"{base}; test accuracy on the full 10,000-image test set after the last epoch, mean ± std over seeds.", "",
                "| variant | seeds | test accuracy | first-layer firing fraction | seconds per run |", "|---|---|---|---|---|"]
        ordered = sorted((r for r in rows if r["budget"] == b),
                         key=lambda r: (r["variant"] != "specification defaults", -r["mean"]))
        for r in ordered:
            spread = f" ± {100 * r['std']:.2f} %" if r["seeds"] > 1 else " % (one seed)"
            out.append(f"| {r['variant']} | {r['seeds']} | {100 * r['mean']:.2f}{spread} | "
                       f"{r['hidden_firing']:.3f} | {r['seconds']:.0f} |")
        machines = sorted({r.get("machine") for r in ablation.get("runs", []) if r["budget"] == b and r.get("machine")})
        if len(machines) > 1:
            out.append("")
            out.append("The runs ran on " + " and on ".join(machines) + " (each run's `machine` field says which), "
                       "so the seconds are not comparable between rows.")
        out.append("")
    return out


def sweep_control(name: str) -> tuple[str, dict, dict] | None:
    """The control row that sweep ``name`` borrows from an earlier sweep (``control = "SWEEP/VARIANT"``
    in its TOML), as (SWEEP, that variant's row of results/sweep-SWEEP.json, that whole file), or None."""
    path = ROOT / "benchmarks" / "sweeps" / f"{name}.toml"
    if not path.exists():
        return None
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep import read_control

    return read_control(path)


def other_machine(sweep: dict, control_sweep: dict) -> str:
    """A sentence saying that a borrowed control (``control_sweep``: the results of the sweep it comes from) was
    trained on another kind of CPU than ``sweep``'s variants (runs repeat to the digit on one kind only), or ""
    when the kinds agree or one is unknown."""
    theirs = control_sweep.get("software", {}).get("cpu_capability")
    ours = sweep.get("software", {}).get("cpu_capability")
    if not theirs or not ours or theirs == ours:
        return ""
    return f" It was trained on a machine with {theirs}, this sweep's variants on one with {ours}."


def sweep_tables() -> list[str]:
    """One table per results/sweep-NAME.json: the variants, best first, compared on validation accuracy."""
    out = []
    for path in sorted((ROOT / "results").glob("sweep-*.json")):
        sweep = json.loads(path.read_text())
        rows = sweep["rows"]
        control = sweep_control(sweep["sweep"])
        # common: the overrides every row shares, the borrowed control's included, so that no change of the
        # variants is read as the control's
        shared = rows + ([control[1]] if control else [])
        common = {k: v for k, v in rows[0]["overrides"].items() if all(r["overrides"].get(k) == v for r in shared)}
        base = sweep.get("base_at") or f"benchmarks/configs/{sweep['base']}.toml"
        stopped = (" Variants with fewer epochs were stopped before their last epoch, by the sweep's `--deadline` or by hand "
                   "(the sweep's TOML file says why)." if len({r["epochs_done"] for r in rows}) > 1 else "")
        note = f" ({sweep['commit_note']})" if sweep.get("commit_note") else ""
        control_commits = (control[2].get("commits") or [control[2]["commit"]]) if control else []
        borrowed = (f" The control row comes from the sweep `{control[0]}` (`results/sweep-{control[0]}.json`, "
                    f"{'commits' if len(control_commits) > 1 else 'commit'} {', '.join(f'`{c[:7]}`' for c in control_commits)}), "
                    f"with the same base config and budget; it was not trained again."
                    f"{other_machine(sweep, control[2])}" if control else "")
        commits = sweep.get("commits") or [sweep["commit"]]
        log = path.with_suffix(".log")
        where = (f"at commit `{sweep['commit'][:7]}`" if len(commits) == 1 else
                 f"(the last of {len(commits)} launches, at commits {', '.join(f'`{c[:7]}`' for c in commits)}"
                 + (f"; each launch's command is in `{log.relative_to(ROOT)}`)" if log.exists() else ")"))
        with_train = any(r.get("train_accuracy_by_epoch") for r in rows)  # sweeps collected before it was recorded lack it
        out += [f"### `{sweep['sweep']}`", "",
                f"Against {base}, with {', '.join(f'{k} = {v}' for k, v in common.items()) or 'no common change'}. "
                f"`{sweep['command']}` {where}{note} on {sweep['machine']}, {sweep['jobs']} "
                f"variant{'s' * (sweep['jobs'] != 1)} at once, one thread each; file `{path.relative_to(ROOT)}`.{stopped}{borrowed}", "",
                "| variant | changes | epochs | validation accuracy by epoch | test at best validation | first-layer firing (last epoch) |"
                + (" training accuracy (last epoch) |" if with_train else ""),
                "|---|---|---|---|---|---|" + ("---|" if with_train else "")]
        def changes_of(r: dict) -> str:
            return ", ".join(f"{k} = {v}" for k, v in r["overrides"].items() if k not in common) or "—"

        table = [(r["variant"], r, changes_of(r)) for r in rows]
        if control:
            table.insert(0, (f"control: `{control[0]}` {control[1]['variant']}", control[1], changes_of(control[1])))
        for label, r, changes in table:
            vals = " → ".join(f"{100 * v:.2f}" for v in r["val_accuracy_by_epoch"] if v is not None) or "—"
            firing = r["firing_fraction_last"][0] if r["firing_fraction_last"] else None
            out.append(f"| {label} | {changes} | {r['epochs_done']} | {vals} | {pct(r['test_accuracy_at_best_val'])} | "
                       f"{'—' if firing is None else f'{100 * firing:.1f} %'} |"
                       + (f" {pct((r.get('train_accuracy_by_epoch') or [None])[-1])} |" if with_train else ""))
        out.append("")
    return out or ["No sweep has been run yet (`python benchmarks/sweep.py NAME`)."]


def config_path(name: str) -> Path:
    """The config file of reproduction run ``name``."""
    return ROOT / "benchmarks" / "configs" / f"{name}.toml"


@functools.cache
def run_config(name: str):
    """The config of reproduction run ``name`` with stidi's defaults filled in, or None if it is missing.

    Read once per run: the recipe lines, the padded networks and the revival clause all ask for it."""
    path = config_path(name)
    if not path.exists():
        return None
    sys.path.insert(0, str(ROOT / "src"))
    from stidi.config import load_config

    return load_config(path)


def any_nonzero(value: float | list) -> bool:
    """Whether a one-or-per-layer field is set anywhere (``[0, 0]`` is as off as ``0``)."""
    return any(value) if isinstance(value, (list, tuple)) else bool(value)


def per_layer_text(value: float | list) -> str:
    """One number (``0.5``) or one per weighted layer (``[0, 0, 0.5, 0]``), as a config field may hold."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:g}" for v in value) + "] per weighted layer"
    return f"{value:g}"


def held_layers(flags: bool | list) -> str:
    """``norm_projection`` as words: "in every weighted layer" or "in weighted layers 1, 2"."""
    if not isinstance(flags, (list, tuple)):
        return "in every weighted layer"
    return "in weighted layers " + ", ".join(str(i + 1) for i, on in enumerate(flags) if on)


def recipe_line(name: str) -> str:
    """The network, margin, learning rate and length of a run's config (with stidi's defaults filled in), as a short phrase."""
    c = run_config(name)
    if c is None:
        return f"* {name}: config missing"
    binary = f", binary scale {c.model.binary_scale}" if c.model.binary else ""
    extra = "".join([f", revival ρ = {c.rule.revival:g}" if c.rule.revival else "",
                     f", weight decay λ = {per_layer_text(c.train.weight_decay)}" if any_nonzero(c.train.weight_decay) else "",
                     f", binary clip ±{c.train.binary_clip:g}α" if c.train.binary_clip else "",
                     f", kernel norms held fixed {held_layers(c.train.norm_projection)}" if any_nonzero(c.train.norm_projection) else ""])
    return (f"* {name} (`{config_path(name).relative_to(ROOT)}`): `{c.model.network}`, {c.rule.targets} targets, γ = {c.rule.gamma:g}, lr {c.train.lr}, "
            f"batch {c.train.batch_size}, {c.train.epochs} epochs, τ = {c.model.tau:g}, "
            f"latency derivative {c.rule.latency_derivative}, input power p = {c.model.input_power:g}, "
            f"random shifts {'of up to ' + str(c.train.augment_shift) + ' px' if c.train.augment_shift else 'none'}, "
            f"mirror images {'yes' if c.train.augment_flip else 'no'}, "
            f"weight average {'β = ' + format(c.train.weight_average, 'g') if c.train.weight_average else 'none'}{extra}{binary}")


def runs_where(test, names: list[str]) -> list[str]:
    """Those of the runs ``names`` (the kept ones) whose config satisfies ``test``."""
    return [name for name in names if (c := run_config(name)) is not None and test(c)]


def padded_networks(names: list[str]) -> str:
    """The Fashion-MNIST runs' networks as configured, e.g. "`48C5p2-P2-96C5p2-P2-10` in fashion-bcsnn"."""
    fashion = runs_where(lambda c: c.train.dataset == "fashion-mnist", names)
    return ", ".join(f"`{run_config(name).model.network}` in {name}" for name in fashion)


def hidden_dense(config) -> bool:
    """Whether a convolutional network has a dense layer before its readout, e.g. ``...-P2-512-10``."""
    from stidi.layers import Conv, Dense, parse_spec

    layers = parse_spec(config.model.network, tuple(config.model.input_shape))
    return any(isinstance(layer, Conv) for layer in layers) and any(isinstance(layer, Dense) for layer in layers[:-1])


def optional_clauses(names: list[str]) -> list[str]:
    """Recipe items that only some of the kept runs' configs use: a hidden dense layer, clipping binary weights, kernel
    norms held fixed ("" items dropped)."""
    dense = runs_where(hidden_dense, names)
    clipped = runs_where(lambda c: c.model.binary and c.train.binary_clip, names)
    normed = runs_where(lambda c: any_nonzero(c.train.norm_projection), names)
    return [f"a dense hidden layer between the convolutions and the readout in {', '.join(dense)}; " if dense else "",
            ("the real weights of binary layers clipped to ±cα after every step (`binary_clip = c`, so a step can "
             f"still flip a sign) in {', '.join(clipped)}; ") if clipped else "",
            ("each neuron's incoming weight norm (a convolution's output-channel kernel) held at its initial value after every step "
             f"(`norm_projection`, docs/algorithm.md) in {', '.join(normed)}; ") if normed else ""]


def revival_clauses(names: list[str]) -> tuple[str, str]:
    """The rule summary's word on revival, and the item naming the runs that use it ("" if none does)."""
    revived = {name: run_config(name).rule.revival for name in runs_where(lambda c: c.rule.revival, names)}
    if not revived:
        return "no revival", ""
    listed = ", ".join(f"{name} (ρ = {rho:g})" for name, rho in revived.items())
    return ("revival only where named below",
            f"revival of silent hidden neurons (`revival = ρ`: a silent neuron gets the part of the displacement that "
            f"asks it to fire) in {listed}; ")


def width_cost() -> str:
    """The wider network's training cost per image against the default's, from the sweep that timed both."""
    path = ROOT / "results" / "sweep-fashion-flip.json"
    if not path.exists():
        return ""
    speed = {r["variant"]: r["train_images_per_s"] for r in json.loads(path.read_text())["rows"]}
    if "wide" not in speed or "base" not in speed:
        return ""
    return (f" ({speed['base'] / speed['wide']:.2f}× the training time per image: {speed['wide']:.0f} against "
            f"{speed['base']:.0f} images/s in `{path.relative_to(ROOT)}`)")


def attempts_section() -> list[str]:
    """The table of full runs that were tried and not kept (or were replaced), from results/attempts/README.md."""
    index = ROOT / "results" / "attempts" / "README.md"
    if not index.exists():
        return []
    rows = [line for line in index.read_text().splitlines() if line.startswith("| `")]
    if not rows:
        return []
    rows = [line.replace("| `", "| `results/attempts/", 1) for line in rows]
    return ["", "Full runs that were tried and not kept, or that a better run replaced (a run is kept only if its "
                "validation accuracy is higher; logs in `results/attempts/`, listed in `results/attempts/README.md`):", "",
            "| log | what | outcome |", "|---|---|---|", *rows]


def latency_section() -> list[str]:
    """The Fashion-MNIST evidence-timing probe (results/fashion-latency.json), as a table."""
    path = ROOT / "results" / "fashion-latency.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    cutoffs = [p["cutoff"] for p in data["rows"][0]["probes"]]
    out = ["## Fashion-MNIST: how much evidence reaches the readout in time", "",
           "The earliest-spike readout decides at its first output spike and can only use the hidden spikes that came "
           "before. `benchmarks/fashion_latency.py` fits a linear classifier to the potentials that the pooled second "
           "convolution of a fresh fashion-rcsnn network builds by a cut-off step, on "
           f"{data['images']['fit']:,} training images, scored on {data['images']['held_out']:,} others "
           f"(`{path.relative_to(ROOT)}`, commit `{data['commit'][:7]}`).", "",
           "| encoding | hidden spike steps (10/50/90 %) | " + " | ".join(f"by step {c}" for c in cutoffs) + " |",
           "|---|---|" + "---|" * len(cutoffs)]
    for row in data["rows"]:
        q = row["hidden_time_quantiles"]
        out.append(f"| {row['network']} | {q['0.1']:.0f} / {q['0.5']:.0f} / {q['0.9']:.0f} | "
                   + " | ".join(pct(p["held_out_accuracy"]) for p in row["probes"]) + " |")
    if data.get("trained_decisions"):
        d = data["trained_decisions"]
        q = d["decision_time_quantiles"]
        out += ["", f"The trained `{d['model']}` as of commit `{data['commit'][:7]}` (input power {d['input_power']:g}) decides at steps "
                f"{q['0.1']:.0f} / {q['0.5']:.0f} / {q['0.9']:.0f} (10/50/90 %) on the same images."]
    return out + [""]


def plot_curves(runs: dict[str, dict]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("matplotlib is not installed: no learning-curve plot (pip install matplotlib)", file=sys.stderr)
        return False
    if not runs:
        return False
    # One panel per dataset: their accuracies lie 8-10 points apart. Each panel's legend sits
    # under it, where it cannot cover a curve however many runs the panel holds.
    datasets = sorted({r.get("dataset", "mnist") for r in runs.values()})
    most_runs = max(sum(r.get("dataset", "mnist") == d for r in runs.values()) for d in datasets)  # up to 2 legend lines each, 2 per row
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2 + 0.22 * most_runs), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for name, r in sorted(runs.items()):
            if r.get("dataset", "mnist") != dataset:
                continue
            epochs = range(1, len(r["test_accuracy_by_epoch"]) + 1)
            line, = ax.plot(epochs, [100 * a for a in r["test_accuracy_by_epoch"]], marker="o", ms=4, label=f"{name} (test)")
            if any(v is not None for v in r["val_accuracy_by_epoch"]):
                ax.plot(epochs, [100 * a for a in r["val_accuracy_by_epoch"]], ls="--", color=line.get_color(),
                        label=f"{name} (validation)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
        ax.set_title(DATASET_NAMES.get(dataset, dataset))
    fig.suptitle("STiDi-BP reproduction runs")
    CURVES.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(CURVES, dpi=120)
    return True


README = ROOT / "README.md"
START, END = "<!-- reproduction:start -->", "<!-- reproduction:end -->"


def replace_readme_block(start: str, end: str, lines: list[str]) -> bool:
    """Replace what stands between the markers ``start`` and ``end`` of README.md with ``lines``
    (the README's generated tables: accuracy here, speed in benchmarks/throughput.py)."""
    text = README.read_text()
    if start not in text or end not in text:
        print(f"README.md has no {start} … {end} block; left unchanged", file=sys.stderr)
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + tail)
    return True


def update_readme(runs: dict[str, dict]) -> None:
    """Replace the block between the reproduction markers of README.md with the accuracy table."""
    if replace_readme_block(START, END, accuracy_table(runs)):
        print(f"updated {README}")


def main() -> int:
    acc_path, abl_path = ROOT / "results" / "accuracy.json", ROOT / "results" / "ablation.json"
    runs = {r["name"]: r for r in json.loads(acc_path.read_text())["runs"]} if acc_path.exists() else {}
    ablation = json.loads(abl_path.read_text()) if abl_path.exists() else {}
    lines = ["# Results: reproducing STiDi-BP", "",
             "Generated by `python benchmarks/render_results.py` from `results/accuracy.json` (written by",
             "`benchmarks/reproduce.py`) and `results/ablation.json` (written by `benchmarks/ablation.py`); do not edit by hand.",
             "Each run's exact command, config file, git commit and log are in its JSON entry.", "",
             "## Accuracy against the paper", "",
             "Test accuracy is measured on the full official 10,000-image test set, at the epoch with the best accuracy on a",
             "validation split carved from the end of the training set (never chosen on the test set).",
             "Training time is the sum of the epochs' wall-clock time as logged; runs that shared the 2 cores with other jobs",
             "took several times longer than on a quiet machine (each run's log has the images/s of every epoch, and",
             "[performance.md](performance.md) the speed of a quiet one).", ""]
    lines += accuracy_table(runs)
    if others := other_runs_table(runs):
        lines += [""] + others
    if plot_curves(runs):
        lines += ["", f"![learning curves](images/{CURVES.name})"]
    lines += ["", "Firing fraction per layer at the chosen epoch (fraction of neurons firing before T on the test set, "
              "layers in spec order, pooling layers included):", ""]
    lines += [f"* {name}: {r['firing_fraction_at_best']}" for name, r in sorted(runs.items())]
    kept_names = [r["name"] for r in kept_runs(runs).values()]
    revival_word, revival_item = revival_clauses(kept_names)
    optional = [item for item in (revival_item, *optional_clauses(kept_names)) if item]
    count = ("Seven", "Eight", "Nine", "Ten", "Eleven")[len(optional)]
    lines += ["", "## Recipe", "",
              "Every run uses the STiDi-BP rule of [algorithm.md](algorithm.md) (linear latency derivative −t/θ, "
              f"fired-before mask, ramp PSP, forced firing, L2-normalised errors, T = 256, {revival_word}); its "
              "training choices are fields of its config in `benchmarks/configs/`: Adam with per-layer learning rates "
              "relative to each layer's initial weight spread, a cosine schedule, batch 32, initialisation calibrated so "
              "that 30 % of each layer's driven neurons fire, and the last 5,000 training images held out for choosing "
              f"the epoch. {count} choices are specific to some runs: a wider network, `48C5-P2-96C5-P2-10` instead of "
              f"the default `32C5-P2-64C5-P2-10`, where it scored higher on validation{width_cost()}; "
              "on Fashion-MNIST, each convolution's input padded by 2 never-firing pixels per side "
              f"({padded_networks(kept_names)}), so that the last map keeps 7×7 positions instead of 4×4 and the frame's border "
              "reaches the readout; a moving average of the weights as the network that is evaluated and saved "
              "(`weight_average`, on Fashion-MNIST); random shifts of the training images "
              "(`augment_shift`) where a network overfit; the contrast curve `input_power` (t = floor(T (1 − x^p))) "
              "for Fashion-MNIST's grey-level images; split output targets (`targets = \"split\"`: the true class and "
              "the earliest other output share the missed margin) on Fashion-MNIST and in mnist-rcsnn; "
              f"{''.join(optional)}and a binary scale fixed at "
              "initialisation (`binary_scale = \"fixed\"`) for the binary networks. Each run keeps its directory under `results/runs/` (named after the run, e.g. "
              "`results/runs/mnist-rcsnn/`: model, best-by-validation model, metrics; an unfinished run's checkpoint "
              "is committed with it, so it can be continued later with the same command; fashion-rcsnn's 55 MB optimiser "
              "checkpoint is not); a run that spans several "
              "invocations lists every commit it ran on.", "",
              "The targets, margin γ, learning rate and length of each kept run, from its config:", ""]
    lines += [recipe_line(name) for name in kept_names]
    lines += attempts_section()
    lines += ["",
              "Published neighbours (from their papers): S4NN 784-400-10 97.4 % (MNIST); BS4NN (binary) 97.0 % MNIST, "
              "87.3 % Fashion-MNIST; the best published TTFS CNNs ≈ 99.5 % MNIST / 93.1 % Fashion-MNIST.", "",
              "## Recipe sweeps", "",
              "How the recipe was chosen: `benchmarks/sweep.py` trains variants of a config side by side and compares "
              "them on the validation split (the test column only shows that the two agree).", ""]
    lines += sweep_tables()
    lines += latency_section()
    lines += ["## Ablation of the rule's options", ""]
    lines += ablation_table(ablation)
    DOC.write_text("\n".join(lines) + "\n")
    print(f"wrote {DOC}")
    update_readme(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
