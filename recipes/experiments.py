"""Experiments: a claim of the survey, measured by training variants of one recipe on real images.

An `Experiment` names a claim, a base recipe, the variants that test the claim, the columns of
its table, and a rule that decides whether the measurement supports the claim. `run_experiment`
trains every variant into its own run folder (a finished run of the same recipe is reused, an
unfinished one resumed), then writes into the experiment's folder:

- `experiment.json`: the claim, the verdict, the table rows, the exact command, the seed, the
  package versions, the machine and the time taken;
- `table.md`: the table in Markdown;
- the figures, as PNG files.

Every number of a row comes from a run folder: `metrics.json`, which `train` writes, or
`measurements.json`, which contains what an experiment measures on the trained model afterwards
(for example the fraction of dead units). `kerastricks report` rebuilds the tables from those
files, so the report always shows the numbers of the runs.
"""

import dataclasses
import datetime
import json
import os
import platform
import re
import sys
import time
import typing
from pathlib import Path

import numpy as np

from kerastricks.recipes.run_state import COMPLETE, read_status, write_json
from kerastricks.recipes.spec import Recipe, RecipeError

SIZES = ("quick", "full")
SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
MEASUREMENTS_FILE = "measurements.json"


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of an experiment's table.

    Args:
        key: the row key, see `row_values` for the keys every row has.
        title: the column heading.
        format: a format specification for the value, e.g. `".4f"`; `"%"` shows a fraction
            as a percentage with two decimals.
    """

    key: str
    title: str
    format: str = ".4f"

    def render(self, value):
        if value is None:
            return "n/a"
        if isinstance(value, str):
            return value
        if self.format == "%":
            return f"{100 * value:.2f} %"
        return format(value, self.format)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether the measurement supports a claim: `status` is one of `SUPPORTED`,
    `NOT_SUPPORTED` or `INCONCLUSIVE`, and `text` gives the reason with the numbers."""

    status: str
    text: str


TEST_ERROR = Column("test_error", "test error", "%")
TRAIN_ERROR = Column("train_error", "train error", "%")
GAP = Column("gap", "test - train error", "%")
TEST_ACCURACY = Column("test_accuracy", "test accuracy", "%")
TRAIN_SECONDS = Column("train_seconds", "train s", ".0f")


@dataclasses.dataclass
class Experiment:
    """One claim of the survey and the runs that test it.

    Args:
        name: the registry name, e.g. `activation_compare`; also the module name under
            `kerastricks.recipes` and the experiment's folder name.
        title: a short heading for the report.
        claim: the claim in one or two sentences.
        source: the survey section and the paper that make the claim, e.g. `"Survey section 5;
            Xu et al. 2015."`.
        recipe: the base recipe at full size; every variant changes some of its fields.
        quick: the fields that shrink the base recipe to the quick size (a few minutes on two
            CPU cores), e.g. `{"subset": 6000, "epochs": 3}`.
        variants: a mapping of a variant's label to the recipe fields it changes.
        columns: the `Column`s of the table after the variant label.
        verdict: a function of the rows (a list of dicts, one per variant, in order) that
            returns a `Verdict`.
        measure: an optional function `(model, data, recipe) -> dict` of extra numbers measured
            on a variant's trained model; they go to the run's `measurements.json`.
        derive: an optional function `(metrics, recipe) -> dict` of extra row values computed
            from a run's `metrics.json` and its recipe (`None` for a run folder without
            `recipe.json`), e.g. the mean recall of some classes.
        curve: the per-epoch history key that the standard curves figure draws for every
            variant. Defaults to `val_accuracy`.
        figures: an optional function `(rows, data, folder) -> list of (file name, caption)`
            that draws figures of its own into `folder`, besides the standard ones.
        notes: what the variants share and what to keep in mind when reading the table.
        runner: an optional function `(experiment, base, data, folder, train_run) -> list
            of (label, run folder)` for experiments that are more than one training run per
            variant (a pre-trained base model, an ensemble). `train_run(recipe, run_dir,
            label)` trains a recipe into a run folder, or reuses a finished run of the same
            recipe there. Each run folder it returns must hold a `metrics.json` with at least
            `test_accuracy`, `train_seconds` and `epochs`. By default every variant's recipe is
            trained with `train_run` into `FOLDER/<variant>`.
    """

    name: str
    title: str
    claim: str
    source: str
    recipe: Recipe
    quick: dict
    variants: dict
    columns: tuple
    verdict: typing.Callable
    measure: typing.Optional[typing.Callable] = None
    derive: typing.Optional[typing.Callable] = None
    curve: str = "val_accuracy"
    figures: typing.Optional[typing.Callable] = None
    notes: str = ""
    runner: typing.Optional[typing.Callable] = None

    def base_recipe(self, size="full", changes=None):
        """Return the base recipe at `size` (`quick` or `full`) with `changes` applied."""
        if size not in SIZES:
            raise RecipeError(f"An experiment size must be one of {list(SIZES)}. Received: {size!r}.")
        recipe = self.recipe.replace(**self.quick) if size == "quick" else self.recipe
        return recipe.replace(**(changes or {}))

    def row(self, label, folder, run_dir):
        """Return the table row of the variant `label` from its run folder `run_dir`."""
        run_dir = Path(run_dir)
        metrics, measurements = read_run(run_dir)
        # Besides the common values, every number the run's metrics.json has at its top level
        # (such as `train_images`) can be a column.
        scalars = {key: value for key, value in metrics.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        row = {"variant": label, "run": run_dir.relative_to(folder).as_posix(),
               **scalars, **row_values(metrics, measurements)}
        if self.derive is not None:
            recipe_file = run_dir / "recipe.json"
            recipe = Recipe.from_file(recipe_file) if recipe_file.is_file() else None
            row.update(self.derive(metrics, recipe))
        return row

    def variant_fields(self, base, label):
        """Return the recipe fields of the variant `label`; a field given as a function of the
        base recipe (e.g. `lambda base: base.epochs // 2`) is evaluated on `base`."""
        return {key: value(base) if callable(value) else value
                for key, value in self.variants[label].items()}

    def variant_recipe(self, base, label):
        """Return the recipe of the variant `label` built on `base`."""
        return base.replace(name=f"{self.name}-{slug(label)}", **self.variant_fields(base, label))


def slug(label):
    """Return a folder-safe form of a variant label: `"Leaky ReLU 0.1"` -> `leaky-relu-0.1`."""
    return re.sub(r"[^a-z0-9.]+", "-", label.lower()).strip("-")


def row_values(metrics, measurements=None):
    """Return the table values of one run from its `metrics.json` and `measurements.json`.

    Every row has `test_accuracy`, `test_error`, `balanced_accuracy`, `train_seconds`,
    `epochs`, `best_val_accuracy`, `final_val_accuracy`, and, when the recipe set
    `evaluate_train`, `train_accuracy`, `train_error` and `gap` (test error minus train error).
    The measurements follow under their own keys.
    """
    history = metrics.get("history", {})
    val_accuracy = history.get("val_accuracy") or [None]
    values = {
        "test_accuracy": metrics["test_accuracy"],
        "test_error": 1.0 - metrics["test_accuracy"],
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "train_seconds": metrics["train_seconds"],
        "epochs": metrics["epochs"],
        "best_val_accuracy": max((v for v in val_accuracy if v is not None), default=None),
        "final_val_accuracy": val_accuracy[-1],
        "train_accuracy": metrics.get("train_accuracy"),
    }
    if values["train_accuracy"] is not None:
        values["train_error"] = 1.0 - values["train_accuracy"]
        values["gap"] = values["test_error"] - values["train_error"]
    values.update(measurements or {})
    return values


def read_run(run_dir):
    """Return `(metrics, measurements)` read from a finished run folder."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    path = run_dir / MEASUREMENTS_FILE
    measurements = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return metrics, measurements


def run_experiment(experiment, size="quick", logdir="runs", changes=None, overwrite=False,
                   verbose=0, command=None, log=print):
    """Train the variants of `experiment` and write its folder `LOGDIR/<name>`.

    Args:
        experiment: an `Experiment`.
        size: `quick` or `full`. Defaults to `quick`.
        logdir: the folder that receives the experiment's folder. Defaults to `runs`.
        changes: recipe fields applied to the base recipe of every variant, e.g.
            `{"dataset": "digits", "subset": 500, "epochs": 1}`.
        overwrite: replace finished runs made with other settings instead of stopping.
            Defaults to `False`.
        verbose: Keras's `fit` verbosity. Defaults to `0`.
        command: the command line to record; defaults to the one that reruns this call.
        log: prints one progress line per variant. Defaults to `print`.

    Returns:
        The summary also written to `experiment.json`.

    Raises:
        RecipeError: a bad size or field, or a variant folder containing a finished run with other
            settings (without `overwrite`).
    """
    from kerastricks.recipes.data import load_dataset
    from kerastricks.recipes.saving import load_model
    from kerastricks.recipes.training import train

    base = experiment.base_recipe(size, changes)
    folder = Path(logdir) / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    recipes = {label: experiment.variant_recipe(base, label) for label in experiment.variants}
    if experiment.runner is None:
        # Reject conflicting folders before any training, not after the first variants have run.
        for label, recipe in recipes.items():
            _check_reusable(folder / slug(label), recipe, overwrite)
    data = load_dataset(base.dataset, subset=base.subset, validation_split=base.validation_split,
                        batch_size=base.batch_size, seed=base.seed)
    trained = []

    def train_run(recipe, run_dir, label):
        trained.append(Path(run_dir))
        progress = f"[{experiment.name} {len(trained)}]"
        _check_reusable(run_dir, recipe, overwrite)
        if (read_status(run_dir) or {}).get("state") == COMPLETE:
            log(f"{progress} reusing the finished run {run_dir}")
            return
        log(f"{progress} training {label!r} in {run_dir}")
        train(recipe, data, run_dir, verbose=verbose, deterministic=True)
        if experiment.measure is not None:
            measurements = experiment.measure(load_model(run_dir), data, recipe)
            write_json(Path(run_dir) / MEASUREMENTS_FILE, _plain(measurements))

    start = time.perf_counter()
    if experiment.runner is not None:
        runs = experiment.runner(experiment, base, data, folder, train_run)
    else:
        runs = []
        for label, recipe in recipes.items():
            train_run(recipe, folder / slug(label), label)
            runs.append((label, folder / slug(label)))
    rows = [experiment.row(label, folder, run_dir) for label, run_dir in runs]
    wall_seconds = time.perf_counter() - start

    verdict = experiment.verdict(rows)
    figures = draw_figures(experiment, rows, data, folder)
    summary = {
        "name": experiment.name,
        "title": experiment.title,
        "claim": experiment.claim,
        "source": experiment.source,
        "notes": experiment.notes,
        "size": size,
        "changes": changes or {},
        "command": command or experiment_command(experiment.name, size, changes, logdir),
        "seed": base.seed,
        "dataset": data.name,
        "images": {"train": int(len(data.y_train)), "validation": int(len(data.y_validation)),
                   "test": int(len(data.y_test))},
        "base_recipe": base.to_dict(),
        "variants": {label: experiment.variant_fields(base, label)
                     for label in experiment.variants},
        "columns": [dataclasses.asdict(column) for column in experiment.columns],
        "rows": rows,
        "verdict": dataclasses.asdict(verdict),
        "figures": [{"file": name, "caption": caption} for name, caption in figures],
        "train_seconds": _total_train_seconds([*trained, *(folder / row["run"] for row in rows)]),
        "wall_seconds": round(wall_seconds, 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    write_json(folder / "experiment.json", _plain(summary))
    (folder / "table.md").write_text(format_table(experiment.columns, rows) + "\n", encoding="utf-8")
    return summary


def _total_train_seconds(run_dirs):
    """Return the training seconds of the runs, each counted once.

    A folder whose metrics name `members` (an ensemble's row) is left out, because its members
    are counted as runs of their own.
    """
    total = 0.0
    for run_dir in dict.fromkeys(Path(run_dir) for run_dir in run_dirs):
        metrics = read_run(run_dir)[0]
        if "members" not in metrics:
            total += metrics["train_seconds"]
    return round(total, 1)


def _check_reusable(run_dir, recipe, overwrite):
    """Remove (with `overwrite`) or reject a finished run of other settings in `run_dir`."""
    import shutil

    run_dir = Path(run_dir)
    if (read_status(run_dir) or {}).get("state") != COMPLETE:
        return
    if Recipe.from_file(run_dir / "recipe.json") == recipe:
        return
    if not overwrite:
        raise RecipeError(
            f"{run_dir} contains a finished run with other settings. Use another --logdir, or pass "
            f"--overwrite to replace the experiment's runs."
        )
    shutil.rmtree(run_dir)


def experiment_command(name, size, changes=None, logdir="runs"):
    """Return the `kerastricks run` command line that runs experiment `name` at `size`."""
    words = ["kerastricks", "run", name]
    if size == "quick":
        words.append("--quick")
    if Path(logdir) != Path("runs"):
        words += ["--logdir", str(logdir)]
    for key, value in sorted((changes or {}).items()):
        flag = {"dataset": "--dataset", "subset": "--subset", "epochs": "--epochs",
                "seed": "--seed", "batch_size": "--batch-size"}.get(key)
        words += [flag, str(value)] if flag else ["--set", f"{key}={json.dumps(value)}"]
    return " ".join(words)


def format_table(columns, rows):
    """Return the rows as a Markdown table: the variant, then one cell per column."""
    columns = [Column(**c) if isinstance(c, dict) else c for c in columns]
    lines = ["| variant | " + " | ".join(c.title for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = [column.render(row.get(column.key)) for column in columns]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_figures(experiment, rows, data, folder):
    """Draw the standard figures and the experiment's own; return (file name, caption) pairs."""
    from kerastricks.recipes.experiment_figures import plot_validation_curves, plot_variant_bars

    folder = Path(folder)
    main = experiment.columns[0]
    figures = [
        plot_variant_bars(rows, main, folder / "bars.png"),
        plot_validation_curves(rows, folder, folder / "validation_curves.png", experiment.curve),
    ]
    figures = [figure for figure in figures if figure is not None]
    if experiment.figures is not None:
        figures += experiment.figures(rows, data, folder)
    return figures


def environment():
    """Return the versions and the machine that a report records."""
    import importlib.metadata

    versions = {}
    for package in ("kerastricks", "keras", "tensorflow", "keras-tuner", "tensorboard",
                    "scikit-learn", "numpy", "matplotlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "packages": versions,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "accelerators": _accelerators(),
    }


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _accelerators():
    if "tensorflow" not in sys.modules:
        return []
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices() if device.device_type != "CPU"]


def _plain(value):
    """Return `value` with NumPy scalars and arrays turned into plain Python for JSON."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def best_and_worst(rows, key, higher_is_better=True):
    """Return the rows with the best and the worst value of `key`."""
    ranked = sorted((row for row in rows if row.get(key) is not None), key=lambda row: row[key],
                    reverse=higher_is_better)
    return ranked[0], ranked[-1]


def accuracy_margin(accuracy, test_images):
    """Return two standard errors of an accuracy measured on `test_images` images.

    A difference between two variants smaller than this margin is within the noise of the test
    split: the standard error of an accuracy p on n images is sqrt(p * (1 - p) / n).
    """
    return 2.0 * (max(accuracy * (1.0 - accuracy), 1e-12) / max(test_images, 1)) ** 0.5


def row_of(rows, label):
    """Return the row of the variant `label`."""
    for row in rows:
        if row["variant"] == label:
            return row
    raise KeyError(f"No variant {label!r}; the variants are {[row['variant'] for row in rows]}.")


# The experiments' shared base: a small VGG-style CNN on Fashion-MNIST, full data, 5 epochs,
# with the final training error measured. Diagnostics stay off: the experiments measure what
# they need themselves, and the table is about the trick, not the run's health.
BASE_FIELDS = {
    "dataset": "fashion_mnist", "width": 16, "depth": 2, "convs_per_block": 2,
    "dense_units": 128, "epochs": 5, "evaluate_train": True, "diagnostics": False,
}
# The quick size: a tenth of the training images and 3 epochs, a few minutes on two CPU cores.
QUICK_FIELDS = {"subset": 6000, "epochs": 3}


def experiment_recipe(name, **fields):
    """Return the experiments' base recipe named `name`, with `fields` changed."""
    return Recipe(name=name, **{**BASE_FIELDS, **fields})


def run_experiment_module(name, argv):
    """Run the experiment `name` with command-line flags, for `python -m kerastricks.recipes.<name>`."""
    from kerastricks.recipes.cli import main

    return main(["run", name, *argv])
