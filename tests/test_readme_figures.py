"""The README's result tables are the committed results, rendered by the committed scripts.

A figure typed into the README by hand, or a result file changed without re-rendering,
makes these tests fail: run ``python benchmarks/render_results.py`` (accuracy) or
``python benchmarks/throughput.py --render-only`` (speed) to bring the README up to date.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchmark_scripts import benchmark_script

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_block(start: str, end: str) -> list[str]:
    assert start in README and end in README, f"README.md lacks the {start} … {end} block"
    return README.split(start, 1)[1].split(end, 1)[0].strip("\n").splitlines()


def test_accuracy_table_matches_results_accuracy_json() -> None:
    render = benchmark_script("render_results")
    runs = {r["name"]: r for r in json.loads((ROOT / "results" / "accuracy.json").read_text())["runs"]}
    assert readme_block(render.START, render.END) == render.accuracy_table(runs)


def test_speed_table_matches_results_throughput_json() -> None:
    throughput = benchmark_script("throughput")
    result = json.loads((ROOT / "results" / "throughput.json").read_text())
    assert readme_block(throughput.SPEED_START, throughput.SPEED_END) == throughput.readme_speed_block(result)


def test_sweep_tables_never_credit_a_borrowed_control_with_the_variants_changes() -> None:
    """A sweep that borrows its control from another sweep lists as common only the overrides that
    control shares too; the variants' own changes (e.g. bcsnn-sgd's optimizer) stay in their rows."""
    render = benchmark_script("render_results")
    text = "\n".join(render.sweep_tables())
    checked = 0
    for path in sorted((ROOT / "results").glob("sweep-*.json")):
        name = json.loads(path.read_text())["sweep"]
        control = render.sweep_control(name)
        if not control:
            continue
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        header = section.split("Against ", 1)[1].split(". `", 1)[0]
        for key, value in control[1]["overrides"].items():
            header = header.replace(f"{key} = {value}", "")
        assert " = " not in header, f"{name}: the table's common changes include one its control lacks: {header}"
        checked += 1
    assert checked > 0
    assert "| sgd-3x | train.optimizer = sgd," in text.split("### `bcsnn-sgd`", 1)[1]


def test_sweep_tables_name_every_launch_of_a_sweep() -> None:
    """A sweep trained in several launches says so and names each launch's commit, not only the first
    one's beside the last launch's command, also where it lends its control to another sweep; a control
    from another kind of CPU is flagged."""
    render = benchmark_script("render_results")
    text = "\n".join(render.sweep_tables())
    checked = 0
    for path in sorted((ROOT / "results").glob("sweep-*.json")):
        sweep = json.loads(path.read_text())
        commits = sweep.get("commits") or [sweep["commit"]]
        header = text.split(f"### `{sweep['sweep']}`", 1)[1].split("\n### ", 1)[0]
        if len(commits) > 1:
            assert f"the last of {len(commits)} launches" in header, sweep["sweep"]
            assert all(f"`{c[:7]}`" in header for c in commits), sweep["sweep"]
            checked += 1
        else:
            assert f"at commit `{sweep['commit'][:7]}`" in header, sweep["sweep"]
    assert checked > 0
    assert "machine with AVX512, this sweep's variants on one with AVX2" in text.split("### `bcsnn-population`", 1)[1]
    # a control borrowed from a sweep of several launches names each of them
    borrowed = text.split("### `bcsnn-pool-ties`", 1)[1].split("\n### ", 1)[0]
    assert "(`results/sweep-bcsnn-population.json`, commits `d213699`, `acb87ef`)" in borrowed


def test_runs_beside_the_targets_get_their_own_table_with_what_they_held_out() -> None:
    """A run of results/accuracy.json that is not one of the five targets (a kept recipe trained on every
    training image) is listed in docs/results.md beside the targets' table, never in it, with the
    validation images its config held out; without such runs there is no second table."""
    render = benchmark_script("render_results")
    runs = {r["name"]: r for r in json.loads((ROOT / "results" / "accuracy.json").read_text())["runs"]}
    targets_only = {name: r for name, r in runs.items() if name in render.TARGETS}
    assert render.other_runs_table(targets_only) == []
    extra = dict(runs["fashion-rcsnn"], name="fashion-rcsnn-all-training-images", epochs=14, epochs_planned=14, best_epoch=14)
    table = render.other_runs_table({**targets_only, extra["name"]: extra})
    rows = [line for line in table if line.startswith("| fashion-")]
    assert rows == [f"| fashion-rcsnn-all-training-images | Fashion-MNIST | `{extra['network']}` | 0 | 14 | 14 | "
                    f"{100 * extra['val_accuracy']:.2f} % | **{100 * extra['test_accuracy']:.2f} %** | {extra['train_seconds'] / 60:.0f} min (2) |"]
    assert not any(line.startswith("| fashion-rcsnn-all") for line in render.accuracy_table({**targets_only, extra["name"]: extra}))
    stopped = dict(extra, epochs_planned=20)  # a run stopped before its schedule ended says so
    assert " | 0 | 14 of 20 | 14 | " in render.other_runs_table({**targets_only, extra["name"]: stopped})[-1]


def test_a_target_keeps_the_finished_run_of_its_family_with_the_highest_validation_accuracy() -> None:
    """A variant (``fashion-rcsnn-…``) replaces the target's own run in the targets' table only by a higher
    validation accuracy, never by its test accuracy, and only once it has run every planned epoch; a run
    without a validation split, or of another target's family, is never kept. The replaced run moves to
    the table beside the targets."""
    render = benchmark_script("render_results")
    runs = {r["name"]: r for r in json.loads((ROOT / "results" / "accuracy.json").read_text())["runs"]}
    own = dict(runs["fashion-rcsnn"], name="fashion-rcsnn", val_accuracy=0.9200, test_accuracy=0.9100, epochs=20, epochs_planned=20)
    base = {name: r for name, r in runs.items() if not name.startswith("fashion-rcsnn")} | {"fashion-rcsnn": own}

    def kept_with(**variant) -> str:
        v = dict(own, name="fashion-rcsnn-x", **variant)
        return render.kept_runs({**base, v["name"]: v})["fashion-rcsnn"]["name"]

    assert kept_with(val_accuracy=0.9204, test_accuracy=0.9000) == "fashion-rcsnn-x"   # higher validation, lower test
    assert kept_with(val_accuracy=0.9196, test_accuracy=0.9300) == "fashion-rcsnn"     # higher test only
    assert kept_with(val_accuracy=0.9200) == "fashion-rcsnn"                           # a tie keeps the target's own run
    assert kept_with(val_accuracy=0.9300, epochs=17) == "fashion-rcsnn"                # stopped at 17 of 20: not judged
    assert kept_with(val_accuracy=None) == "fashion-rcsnn"                             # no validation split
    assert render.kept_runs({**base, "fashion-rcsnnx": dict(own, name="fashion-rcsnnx", val_accuracy=0.99)})["fashion-rcsnn"]["name"] == "fashion-rcsnn"
    v = dict(own, name="fashion-rcsnn-x", val_accuracy=0.9300)
    table = render.accuracy_table({**base, "fashion-rcsnn-x": v})
    assert any(line.startswith("| fashion-rcsnn (`fashion-rcsnn-x`) | ") and "| 93.00 % | **91.00 %** |" in line for line in table)
    beside = render.other_runs_table({**base, "fashion-rcsnn-x": v})
    assert [line.split(" | ")[0] for line in beside if line.startswith("| fashion-")] == ["| fashion-rcsnn"]
