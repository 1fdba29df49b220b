"""The `kerastricks` command: list recipes and data sets, and run a recipe.

User mistakes (an unknown name, a bad value, a missing file) print one line on standard error and
exit with status 2, without a traceback.
"""

import argparse
import sys
from pathlib import Path

from kerastricks.recipes.quiet import quiet_tensorflow

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def positive_int(text):
    """Parse a positive integer for argparse, with a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def non_negative_int(text):
    """Parse an integer >= 0 for argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text!r}")
    return value


def add_run_arguments(parser):
    """Add the flags that choose and adjust a recipe, shared by `run` and the recipe modules."""
    parser.add_argument("--dataset", help="data set name or folder:PATH (default: the recipe's)")
    parser.add_argument("--epochs", type=positive_int, help="number of training epochs")
    parser.add_argument("--subset", type=positive_int,
                        help="train on at most this many images (stratified), for quick runs")
    parser.add_argument("--batch-size", type=positive_int, help="images per training batch")
    parser.add_argument("--seed", type=non_negative_int, help="seed of the split, weights and shuffling")
    parser.add_argument("--logdir", default="runs",
                        help="folder that receives the run folder (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="set any recipe field, e.g. --set activation=tanh; repeatable")
    parser.add_argument("--quiet", action="store_true", help="hide Keras's progress bar")


def build_parser():
    parser = argparse.ArgumentParser(
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
    run_parser.set_defaults(handler=_run)
    return parser


def main(argv=None):
    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)

    from kerastricks.recipes.data import DataError
    from kerastricks.recipes.spec import RecipeError

    try:
        return args.handler(args, parser)
    except (RecipeError, DataError) as error:
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
    from kerastricks.recipes.registry import RECIPES

    print("Recipes:")
    for name, (_, description) in sorted(RECIPES.items()):
        print(f"  {name:<16} {description}")
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
        print(f"  {name:<16} {notes[name]}")
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
    set_keys = {item.partition("=")[0].strip() for item in args.overrides}
    for key in sorted(set_keys & set(flags)):
        parser.error(f"--{key.replace('_', '-')} and --set {key}=... both set {key}; use one of them")
    return recipe.replace(**flags).with_overrides(args.overrides)


def _run(args, parser):
    from kerastricks.recipes.training import check_writable

    recipe = resolve_recipe(args, parser)
    try:
        check_writable(args.logdir)
    except OSError as error:
        print(f"kerastricks: error: cannot write to --logdir {args.logdir}: {error.strerror or error}. "
              f"Choose a writable folder.", file=sys.stderr)
        return EXIT_USAGE

    from kerastricks.recipes.data import load_dataset
    from kerastricks.recipes.training import make_run_dir, train

    data = load_dataset(recipe.dataset, subset=recipe.subset, validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)
    run_dir = make_run_dir(args.logdir, recipe)
    print(f"Training {recipe.name} on {data.name}: {len(data.y_train)} training, "
          f"{len(data.y_validation)} validation, {len(data.y_test)} test images, "
          f"{recipe.epochs} epochs.")
    try:
        metrics = train(recipe, data, run_dir, verbose=0 if args.quiet else 1)
    except KeyboardInterrupt:
        print(f"kerastricks: interrupted; the run folder {run_dir} is marked failed.", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_summary(recipe, metrics, run_dir, args.logdir)
    return 0


def _print_summary(recipe, metrics, run_dir, logdir):
    print()
    print(f"{recipe.name} on {metrics['dataset']}: {metrics['epochs']} epochs in "
          f"{metrics['train_seconds']:.1f} s")
    rows = [("test_accuracy", f"{metrics['test_accuracy']:.4f}"),
            ("test_loss", f"{metrics['test_loss']:.4f}")]
    for name, value in rows:
        print(f"  {name:<14} {value}")
    print(f"Run folder: {run_dir}")
    print(f"TensorBoard: tensorboard --logdir {logdir}")


if __name__ == "__main__":
    sys.exit(main())
