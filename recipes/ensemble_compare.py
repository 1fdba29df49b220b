"""Experiment: ensembles against one model of the same recipe.

Trick: averaging the predictions of several networks (different initializations), of the
snapshots of one run (cyclic cosine learning rate), of one run's weights (SWA, EMA), and of
test-time views of each image. Source: the ensemble section of Wei's survey "Must Know
Tips/Tricks in Deep Neural Networks"; Huang et al. 2017 (snapshot ensembles); Izmailov et al.
2018 (SWA).

Design: the experiments' shared CNN with batch normalization, 6 epochs (4 at the quick size).
Three runs differ only in their seed; the first is the single-model reference. One run has
snapshot cycles (half as many as epochs, so each cycle is 2 epochs), one averages the weights of
its second half (SWA), one keeps an exponential moving average (EMA). An ensemble's training
time is the sum of its members' training times. Its row is written as a small run folder of its
own whose `metrics.json` contains the ensemble's test accuracy, so the report reads it like any run.

Run:

    kerastricks run ensemble_compare --quick     # about 6 runs of a minute on two CPU cores
    python -m kerastricks.recipes.ensemble_compare
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

from pathlib import Path  # noqa: E402

from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ACCURACY, TRAIN_SECONDS, Column, Experiment,
    Verdict, accuracy_margin, experiment_recipe, row_of, slug,
)
from kerastricks.recipes.run_state import write_json  # noqa: E402

SEEDS = 3
ONE_MODEL = "one model"
# Method label -> (member runs, test-time views).
ENSEMBLES = {
    "2 seeds averaged": (("seed-0", "seed-1"), None),
    "3 seeds averaged": (("seed-0", "seed-1", "seed-2"), None),
    "one model, flip views": (("seed-0",), "flip"),
    "3 seeds, flip views": (("seed-0", "seed-1", "seed-2"), "flip"),
    "snapshot ensemble (one run)": (("snapshots",), None),
}
SINGLE_RUN_METHODS = {"SWA (one run)": "swa", "EMA (one run)": "ema"}


def snapshot_cycles(epochs):
    """Return the number of snapshot cycles: the largest divisor of `epochs` that leaves at
    least 2 epochs per cycle, or 1."""
    return max([c for c in range(1, epochs // 2 + 1) if epochs % c == 0], default=1)


def member_recipes(base):
    """Return the member runs' recipes by folder name."""
    recipes = {f"seed-{i}": base.replace(name=f"ensemble_compare-seed-{i}", seed=base.seed + i)
               for i in range(SEEDS)}
    recipes["snapshots"] = base.replace(name="ensemble_compare-snapshots",
                                        snapshots=snapshot_cycles(base.epochs))
    recipes["swa"] = base.replace(name="ensemble_compare-swa", swa_start=base.epochs // 2)
    recipes["ema"] = base.replace(name="ensemble_compare-ema", ema=True)
    return recipes


def run_ensembles(experiment, base, data, folder, train_run):
    """Train (or reuse) the member runs, then write one folder per ensemble; return the rows."""
    from kerastricks.recipes.ensembles import (
        accuracy, average_probabilities, load_members, predict_members,
    )
    from kerastricks.recipes.experiments import read_run

    runs = {}
    for name, recipe in member_recipes(base).items():
        runs[name] = Path(folder) / "members" / name
        train_run(recipe, runs[name], name)

    rows = [(ONE_MODEL, runs["seed-0"])]
    for label, (names, views) in ENSEMBLES.items():
        paths = [runs[n] / "snapshots" if n == "snapshots" else runs[n] for n in names]
        probabilities = predict_members(load_members(paths), data.x_test, views=views)
        metrics = [read_run(runs[n])[0] for n in names]
        ensemble_dir = Path(folder) / slug(label)
        ensemble_dir.mkdir(parents=True, exist_ok=True)
        write_json(ensemble_dir / "metrics.json", {
            "test_accuracy": accuracy(average_probabilities(probabilities), data.y_test),
            "train_seconds": round(sum(m["train_seconds"] for m in metrics), 3),
            "epochs": sum(m["epochs"] for m in metrics),
            "models": len(probabilities),
            "members": [str(p.relative_to(folder)) for p in paths],
            "views": views,
            "test_images": len(data.y_test),
        })
        rows.append((label, ensemble_dir))
    rows += [(label, runs[name]) for label, name in SINGLE_RUN_METHODS.items()]
    return rows


def verdict(rows):
    """Return the verdict: supported when averaging three seeds beats the single model by more
    than the noise of the test split."""
    single = row_of(rows, ONE_MODEL)
    seeds = row_of(rows, "3 seeds averaged")["test_accuracy"]
    margin = accuracy_margin(single["test_accuracy"], single.get("test_images", 10000))
    best = max(rows, key=lambda row: row["test_accuracy"])
    gain = seeds - single["test_accuracy"]
    text = (f"one model {100 * single['test_accuracy']:.2f} %, three seeds averaged "
            f"{100 * seeds:.2f} % ({100 * gain:+.2f} points, noise {100 * margin:.2f}); best: "
            f"{best['variant']} at {100 * best['test_accuracy']:.2f} %")
    if gain > margin:
        return Verdict(SUPPORTED, f"Averaging models beats one model: {text}.")
    if gain >= -margin:
        return Verdict(INCONCLUSIVE, f"Averaging three seeds is within the noise of one model: "
                                     f"{text}.")
    return Verdict(NOT_SUPPORTED, f"Averaging three seeds did worse than one model here: {text}.")


EXPERIMENT = Experiment(
    name="ensemble_compare",
    title="Ensembles: seeds, snapshots, SWA, EMA and test-time views",
    claim="An ensemble of several networks is more accurate than one of them; averaging a "
          "network over test-time views, its snapshots, or its weights (SWA, EMA) gains part "
          "of that at the cost of one training run.",
    source="Survey section 8 (ensembles); Huang et al. 2017; Izmailov et al. 2018.",
    recipe=experiment_recipe("ensemble_compare", epochs=6, evaluate_train=False),
    quick={"subset": 6000, "epochs": 4},
    variants={label: {} for label in (ONE_MODEL, *ENSEMBLES, *SINGLE_RUN_METHODS)},
    columns=(TEST_ACCURACY, Column("epochs", "training epochs", "d"), TRAIN_SECONDS),
    verdict=verdict,
    runner=run_ensembles,
    notes="Members share the recipe and differ only in the seed or the averaging option; "
          "training epochs and seconds are summed over an ensemble's members.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("ensemble_compare", sys.argv[1:]))
