"""Compare ensemble tricks on one recipe: seeds, snapshots, SWA, EMA, test-time views, stacking.

Trick: the ensembles of section 8 of Wei's survey "Must Know Tips/Tricks in Deep Neural
Networks" (different initializations, checkpoints of one run, averaged parameters, views of the
data, stacked networks), measured against one model of the same recipe and epochs.

Runs: N seeds of the recipe (the first is the single-model reference), one run with M snapshot
cycles, one with SWA, one with EMA, and a K-fold cross-validation of the recipe from two seeds
for stacking. That is N + 3 runs plus 2K runs on (K - 1) / K of the images. See
docs/ensembles.md for the measured run time on full Fashion-MNIST.
The table (`comparison.md`, `comparison.json` in `--logdir`) gives each method's test accuracy
and its gain over the single model.

Example:

    python -m kerastricks.recipes.ensemble_comparison baseline --dataset fashion_mnist \\
        --epochs 4 --set width=16 --no-diagnostics --logdir runs/ensembles
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_parser():
    from kerastricks.recipes.cli import add_run_arguments, positive_int

    parser = argparse.ArgumentParser(
        prog="python -m kerastricks.recipes.ensemble_comparison",
        description="Compare one model with seed, snapshot, SWA, EMA, test-time-view and "
                    "stacking ensembles of the same recipe.")
    parser.add_argument("recipe", metavar="RECIPE", nargs="?", default="baseline",
                        help="a recipe name or file (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="independent runs averaged (default: %(default)s)")
    parser.add_argument("--snapshots", type=positive_int, default=2,
                        help="snapshot cycles; must divide the epochs (default: %(default)s)")
    parser.add_argument("--swa-start", type=int, default=None,
                        help="epochs before SWA starts averaging (default: half the epochs)")
    parser.add_argument("--folds", type=positive_int, default=3,
                        help="folds of the cross-validation for stacking (default: %(default)s)")
    parser.add_argument("--views", choices=("flip", "ten_crop"), default="flip",
                        help="test-time views (default: %(default)s)")
    add_run_arguments(parser)
    return parser


def main(argv=None):
    from kerastricks.recipes.cli import resolve_recipe
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    recipe = resolve_recipe(args, parser)
    swa_start = args.swa_start if args.swa_start is not None else recipe.epochs // 2
    start = time.perf_counter()
    rows = compare(recipe, args.logdir, seeds=args.seeds, snapshots=args.snapshots,
                   swa_start=swa_start, folds=args.folds, views=args.views,
                   verbose=0 if args.quiet else 2)
    minutes = (time.perf_counter() - start) / 60
    table = format_comparison(rows)
    print(table)
    print(f"\n{minutes:.1f} minutes in all.")
    logdir = Path(args.logdir)
    (logdir / "comparison.md").write_text(table + "\n", encoding="utf-8")
    (logdir / "comparison.json").write_text(json.dumps(
        {"rows": rows, "minutes": round(minutes, 1), "command": sys.argv, "recipe": recipe.to_dict()},
        indent=2) + "\n", encoding="utf-8")
    return 0


def compare(recipe, logdir, seeds=3, snapshots=2, swa_start=1, folds=3, views="flip", verbose=0):
    """Train the runs of the comparison and return its table rows (name, members, accuracy)."""
    from kerastricks.recipes.crossval import cross_validate
    from kerastricks.recipes.ensembles import accuracy, load_members, predict_members
    from kerastricks.recipes.stacking import StackingEnsemble
    from kerastricks.recipes.training import make_run_dir, train

    data = _load(recipe)
    labels = data.y_test

    def run(changes):
        variant = recipe.replace(**changes)
        run_dir = make_run_dir(logdir, variant)
        print(f"Training {variant.name} in {run_dir}.", flush=True)
        train(variant, data, run_dir, verbose=verbose)
        return Path(run_dir)

    seed_runs = [run({"seed": recipe.seed + i}) for i in range(seeds)]
    seed_probabilities = predict_members(load_members(seed_runs), data.x_test)
    single = seed_probabilities[0]
    results = [("one model", 1, accuracy(single, labels)),
               (f"{seeds} seeds averaged", seeds, accuracy(seed_probabilities.mean(axis=0), labels))]

    snapshot_run = run({"name": f"{recipe.name}-snapshots", "snapshots": snapshots})
    snapshot_members = load_members([snapshot_run / "snapshots"])
    results.append((f"{snapshots} snapshots averaged", snapshots,
                    accuracy(predict_members(snapshot_members, data.x_test).mean(axis=0), labels)))
    for name, changes in (("SWA", {"swa_start": swa_start}), ("EMA", {"ema": True})):
        model_run = run({"name": f"{recipe.name}-{name.lower()}", **changes})
        probabilities = predict_members(load_members([model_run]), data.x_test)[0]
        results.append((f"{name} (one run)", 1, accuracy(probabilities, labels)))

    viewed = predict_members(load_members(seed_runs[:1]), data.x_test, views=views)[0]
    results.append((f"one model, {views} views", 1, accuracy(viewed, labels)))

    cross_validations = [
        cross_validate(recipe.replace(seed=recipe.seed + i), data, folds, logdir, verbose)
        for i in range(2)
    ]
    base_test = np.stack([result.predict(data.x_test) for result in cross_validations])
    results.append((f"{folds}-fold models of 2 seeds averaged", 2 * folds,
                    accuracy(base_test.mean(axis=0), labels)))
    stacker = StackingEnsemble(meta="logistic", seed=recipe.seed).fit(cross_validations)
    results.append(("stacking (logistic) on those", 2 * folds,
                    accuracy(stacker.predict_proba(base_test), labels)))
    reference = results[0][2]
    return [{"name": name, "members": members, "accuracy": value, "gain": value - reference}
            for name, members, value in results]


def _load(recipe):
    from kerastricks.recipes.data import load_dataset

    return load_dataset(recipe.dataset, subset=recipe.subset, validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)


def format_comparison(rows):
    """Return the rows of `compare` as a Markdown table, accuracies in percent."""
    lines = ["| method | models | test accuracy | gain over one model |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['members']} | {100 * row['accuracy']:.2f} % | "
                     f"{100 * row['gain']:+.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
