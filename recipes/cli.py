"""The `kerastricks` command: list recipes and data sets, and run a recipe.

User mistakes (an unknown name, a bad value, a missing file) print one line on standard error and
exit with status 2, without a traceback.
"""

import argparse
import sys
import warnings
from pathlib import Path

from kerastricks.recipes.distribute import add_distribute_arguments
from kerastricks.recipes.quiet import quiet_tensorflow

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _int_at_least(text, minimum, description):
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected {description}, received {text!r}")
    return value


def positive_int(text):
    """Parse a positive integer for argparse, with a message naming the value."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text):
    """Parse an integer >= 0 for argparse, with a message naming the value."""
    return _int_at_least(text, 0, "an integer >= 0")


def add_run_arguments(parser):
    """Add the flags that choose and adjust a recipe, shared by `run` and the recipe modules."""
    parser.add_argument("--dataset", help="data set name or folder:PATH (default: the recipe's)")
    parser.add_argument("--epochs", type=positive_int, help="number of training epochs")
    parser.add_argument("--subset", type=positive_int,
                        help="use at most this many training plus validation images (a "
                             "stratified sample), and cut the test split by the same fraction; "
                             "for quick runs")
    parser.add_argument("--batch-size", type=positive_int, help="images per training batch")
    parser.add_argument("--seed", type=non_negative_int,
                        help="seed of the split, weights and shuffling; also makes TensorFlow's "
                             "operations deterministic, so reruns give the same numbers on CPU")
    parser.add_argument("--logdir", default="runs",
                        help="folder that receives the run folder (default: %(default)s)")
    parser.add_argument("--run-dir", help="use this run folder instead of a new one in --logdir; "
                                          "an unfinished run there is resumed")
    parser.add_argument("--resume", action="store_true",
                        help="resume the newest unfinished run of this recipe in --logdir")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run in --run-dir instead of stopping")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="set any recipe field, e.g. --set activation=tanh; repeatable")
    parser.add_argument("--quiet", action="store_true", help="hide Keras's progress bar")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="skip the diagnostics (activation statistics, update ratios, figures "
                             "and the text diagnosis); same as --set diagnostics=false")


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = OneLineErrorParser(
        prog="kerastricks",
        description="Train CNNs on images with the tricks of the trade, and read the results in "
                    "TensorBoard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    list_parser = commands.add_parser("list", help="list the recipes and data sets")
    list_parser.set_defaults(handler=_list)

    run_parser = commands.add_parser("run", help="train a recipe and write a run folder")
    run_parser.add_argument("recipe", metavar="RECIPE",
                            help="a recipe name (see 'kerastricks list') or a .json/.yaml recipe file")
    add_run_arguments(run_parser)
    run_parser.add_argument("--quick", action="store_true",
                            help="for an experiment: its quick size (a few minutes on two CPU "
                                 "cores) instead of the full size")
    add_distribute_arguments(run_parser)
    run_parser.set_defaults(handler=_run)

    from kerastricks.recipes.lr_find import add_lr_find_arguments, run_lr_find

    lr_find_parser = commands.add_parser(
        "lr-find", help="sweep the learning rate of a recipe and suggest one (model left untrained)"
    )
    add_lr_find_arguments(lr_find_parser)
    lr_find_parser.set_defaults(handler=run_lr_find)

    from kerastricks.recipes.search_cli import add_search_arguments, run_search_command

    search_parser = commands.add_parser(
        "search", help="search combinations of tricks with keras-tuner and rank them"
    )
    add_search_arguments(search_parser)
    search_parser.set_defaults(handler=run_search_command)

    from kerastricks.recipes.ensemble_command import add_ensemble_arguments, run_ensemble

    ensemble_parser = commands.add_parser(
        "ensemble", help="train or load several models, combine their predictions, compare them"
    )
    add_ensemble_arguments(ensemble_parser, positive_int)
    add_run_arguments(ensemble_parser)
    ensemble_parser.set_defaults(handler=run_ensemble)

    from kerastricks.recipes.report import add_report_arguments, run_report_command

    report_parser = commands.add_parser(
        "report", help="write the Markdown report of the finished experiments (or run them first)"
    )
    add_report_arguments(report_parser)
    report_parser.set_defaults(handler=run_report_command)
    return parser


def main(argv=None):
    quiet_tensorflow()
    # The run summary prints the diagnosis, so the diagnostics callbacks' warnings would repeat it.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"kerastricks\.callbacks\.")
    parser = build_parser()
    args = parser.parse_args(argv)

    from kerastricks.recipes.data import DataError
    from kerastricks.recipes.distribute import DistributeError
    from kerastricks.recipes.spec import RecipeError

    try:
        return args.handler(args, parser)
    except (RecipeError, DataError, DistributeError) as error:
        print(f"kerastricks: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kerastricks: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_module(recipe_name, argv):
    """Run a named recipe with command-line flags, for `python -m kerastricks.recipes.<name>`."""
    return main(["run", recipe_name, *argv])


def _list(args, parser):
    from kerastricks.recipes.data import available_datasets, fashion_mnist_folders
    from kerastricks.recipes.idx import find_idx_file
    from kerastricks.recipes.registry import EXPERIMENTS, RECIPES

    print("Recipes:")
    for name, (_, description) in sorted(RECIPES.items()):
        print(f"  {name:<22} {description}")
    print("Experiments (kerastricks run NAME [--quick]; kerastricks report):")
    for name, (_, description) in EXPERIMENTS.items():
        print(f"  {name:<22} {description}")
    fashion = next((folder for folder in fashion_mnist_folders()
                    if find_idx_file(folder, "train-images-idx3-ubyte")), None)
    notes = {
        "digits": "scikit-learn's 8x8 digits, embedded, offline (default)",
        "fashion_mnist": f"found in {fashion}" if fashion else
                         "not found locally: apt-get install dataset-fashion-mnist, or downloads",
        "mnist": "downloads through keras.datasets",
        "cifar10": "downloads through keras.datasets",
        "cifar100": "downloads through keras.datasets",
        "folder:PATH": "a folder of class subfolders of images",
    }
    print("Data sets:")
    for name in available_datasets():
        print(f"  {name:<22} {notes[name]}")
    return 0


def resolve_recipe(args, parser):
    """Return the recipe named on the command line with the flags and `--set` values applied."""
    from kerastricks.recipes.registry import get_recipe
    from kerastricks.recipes.spec import Recipe

    if args.recipe.endswith((".json", ".yaml", ".yml")) or Path(args.recipe).is_file():
        recipe = Recipe.from_file(args.recipe)
    else:
        recipe = get_recipe(args.recipe)

    flags = {"dataset": args.dataset, "epochs": args.epochs, "subset": args.subset,
             "batch_size": args.batch_size, "seed": args.seed}
    flags = {key: value for key, value in flags.items() if value is not None}
    if getattr(args, "no_diagnostics", False):
        flags["diagnostics"] = False
    set_keys = {item.partition("=")[0].strip() for item in args.overrides}
    for key in sorted(set_keys & set(flags)):
        flag = "--no-diagnostics" if key == "diagnostics" else f"--{key.replace('_', '-')}"
        parser.error(f"{flag} and --set {key}=... both set {key}; use one of them")
    # One validation of all changes together, because a field may only be valid with another
    # (discriminative_lr needs diagnostics off, snapshots must divide epochs).
    recipe = recipe.with_overrides(args.overrides, changes=flags)
    if recipe.finetune_from is not None:
        # The run's recipe.json stores the absolute path, so it reruns from any folder.
        recipe = recipe.replace(finetune_from=str(Path(recipe.finetune_from).absolute()))
    return recipe


def _run(args, parser):
    from kerastricks.recipes.distribute import (
        create_strategy, recipe_for_strategy, scale_for_replicas,
    )
    from kerastricks.recipes.run_state import TrainingFailed
    from kerastricks.recipes.training import check_writable

    from kerastricks.recipes.registry import is_experiment

    if is_experiment(args.recipe) and not Path(args.recipe).is_file():
        return _run_experiment(args, parser)
    if args.quick:
        parser.error(f"--quick applies to experiments; {args.recipe!r} is a recipe (see "
                     f"'kerastricks list')")
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; use one of them")
    # Before any other TensorFlow operation: the strategy may split the CPU into devices.
    strategy = create_strategy(args.distribute)
    recipe = resolve_recipe(args, parser)
    recipe = scale_for_replicas(recipe, strategy.num_replicas_in_sync, args.batch_scaling)
    recipe = recipe_for_strategy(recipe, strategy)
    try:
        check_writable(args.run_dir or args.logdir)
    except OSError as error:
        print(f"kerastricks: error: cannot write to {args.run_dir or args.logdir}: "
              f"{error.strerror or error}. Choose a writable folder.", file=sys.stderr)
        return EXIT_USAGE

    from kerastricks.recipes.augmentation import check_augmentation_fits
    from kerastricks.recipes.data import load_dataset
    from kerastricks.recipes.finetune import check_finetune_data
    from kerastricks.recipes.imbalance import check_imbalance_data
    from kerastricks.recipes.training import train

    data = load_dataset(recipe.dataset, subset=recipe.subset, validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)
    # The fields that need the data are checked before the start line and the run folder, and
    # the line counts the images after the imbalance cut and the minority crops.
    train_images, validation_images = check_imbalance_data(recipe, data)
    finetune_strategy = check_finetune_data(recipe, data, train_images)
    check_augmentation_fits(recipe, data.input_shape)
    run_dir = _choose_run_dir(args, recipe)
    finetuning = (f" (fine-tuning {recipe.finetune_from}, strategy {finetune_strategy})"
                  if finetune_strategy else "")
    print(f"Training {recipe.name} on {data.name}{finetuning}: {train_images} training, "
          f"{validation_images} validation, {len(data.y_test)} test images, "
          f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}.")
    if strategy.num_replicas_in_sync > 1:
        print(f"Distributed ({args.distribute}): {strategy.num_replicas_in_sync} replicas, global "
              f"batch {recipe.batch_size}, learning rate {recipe.learning_rate:g}.")
    try:
        metrics = train(recipe, data, run_dir, verbose=0 if args.quiet else 1,
                        deterministic=args.seed is not None, strategy=strategy)
    except TrainingFailed as error:
        print(f"kerastricks: training failed: {error}", file=sys.stderr)
        print(f"The run folder {run_dir} records the failure in status.json.", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"kerastricks: interrupted. Resume with: kerastricks run {run_dir / 'recipe.json'} "
              f"--run-dir {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_summary(recipe, metrics, run_dir, args.run_dir or args.logdir)
    return 0


def _run_experiment(args, parser):
    """Run a registered experiment: train its variants, print its table and verdict."""
    from kerastricks.recipes.experiments import format_table, run_experiment
    from kerastricks.recipes.registry import get_experiment

    for flag, given in (("--run-dir", args.run_dir), ("--resume", args.resume),
                        ("--distribute", args.distribute != "none")):
        if given:
            parser.error(f"{flag} applies to single recipes, not to the experiment "
                         f"{args.recipe!r}; an experiment reuses or resumes its own run folders")
    experiment = get_experiment(args.recipe)
    flags = {"dataset": args.dataset, "epochs": args.epochs, "subset": args.subset,
             "batch_size": args.batch_size, "seed": args.seed}
    changes = {key: value for key, value in flags.items() if value is not None}
    if args.overrides:
        base = experiment.recipe.with_overrides(args.overrides).to_dict()
        original = experiment.recipe.to_dict()
        changes.update({key: value for key, value in base.items() if value != original[key]})
    size = "quick" if args.quick else "full"
    from kerastricks.recipes.training import check_writable

    try:
        check_writable(args.logdir)
    except OSError as error:
        print(f"kerastricks: error: cannot write to {args.logdir}: {error.strerror or error}. "
              f"Choose a writable folder.", file=sys.stderr)
        return EXIT_USAGE
    summary = run_experiment(experiment, size, args.logdir, changes, overwrite=args.overwrite,
                             verbose=0 if args.quiet else 2)
    print()
    print(f"{summary['title']} ({summary['dataset']}, {size} size)")
    print(format_table(summary["columns"], summary["rows"]))
    print(f"Verdict: {summary['verdict']['status']}. {summary['verdict']['text']}")
    print(f"Experiment folder: {Path(args.logdir) / experiment.name}")
    print(f"Report: kerastricks report --logdir {args.logdir}")
    return 0


def _choose_run_dir(args, recipe):
    """Return the run folder: `--run-dir`, the newest unfinished run for `--resume`, or a new one."""
    import shutil

    from kerastricks.recipes.run_state import COMPLETE, read_status
    from kerastricks.recipes.spec import Recipe, RecipeError
    from kerastricks.recipes.training import check_resumable, make_run_dir

    if args.run_dir:
        run_dir = Path(args.run_dir)
        status = read_status(run_dir)
        if args.overwrite and status is not None:
            shutil.rmtree(run_dir)
            return run_dir
        check_resumable(run_dir, recipe)
        if status is not None and status.get("state") != COMPLETE:
            print(f"Resuming the unfinished run in {run_dir}.")
        return run_dir
    if args.resume:
        candidates = sorted(Path(args.logdir).glob(f"{recipe.name}-*/status.json"), reverse=True)
        for status_file in candidates:
            folder = status_file.parent
            state = read_status(folder).get("state")
            if state != COMPLETE and Recipe.from_file(folder / "recipe.json") == recipe:
                print(f"Resuming the unfinished run in {folder}.")
                return folder
        raise RecipeError(
            f"No unfinished run of recipe {recipe.name!r} with these settings in {args.logdir}. "
            f"Drop --resume to start a new run."
        )
    return make_run_dir(args.logdir, recipe)


def _print_summary(recipe, metrics, run_dir, logdir):
    print()
    epochs = "1 epoch" if metrics["epochs"] == 1 else f"{metrics['epochs']} epochs"
    print(f"{recipe.name} on {metrics['dataset']}: {epochs} in "
          f"{metrics['train_seconds']:.1f} s")
    rows = [("test_accuracy", f"{metrics['test_accuracy']:.4f}"),
            ("test_loss", f"{metrics['test_loss']:.4f}")]
    for name, value in rows:
        print(f"  {name:<14} {value}")
    if metrics.get("diagnosis") is not None:
        print("Diagnosis (also in diagnosis.txt):")
        for line in metrics["diagnosis"] or ["- no problems found."]:
            print(f"  {line}")
    print(f"Run folder: {run_dir}")
    print(f"TensorBoard: tensorboard --logdir {logdir}")


if __name__ == "__main__":
    sys.exit(main())
