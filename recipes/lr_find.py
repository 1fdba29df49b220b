"""`kerastricks lr-find RECIPE`: run the learning-rate finder on a recipe's model and data.

The finder trains the recipe's freshly initialized model for a few hundred steps while the
learning rate grows exponentially, plots the smoothed loss against the learning rate, and
suggests the learning rate where the loss falls fastest (see
`kerastricks.callbacks.suggest_learning_rate`). The model is thrown away afterwards; nothing is
trained for real. Source: L. N. Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017. On digits, 200 steps take well under a minute on a laptop CPU (an estimate).

Example:

    kerastricks lr-find baseline --dataset digits --steps 200 --out lr-find
"""

import argparse
import json
import sys
from pathlib import Path


def positive_float(text):
    """Parse a positive number for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def add_lr_find_arguments(parser):
    """Add the `lr-find` flags: the recipe, its adjustments and the sweep's range."""
    from kerastricks.recipes.cli import non_negative_int, positive_int

    parser.add_argument("recipe", metavar="RECIPE",
                        help="a recipe name (see 'kerastricks list') or a .json/.yaml recipe file")
    parser.add_argument("--dataset", help="data set name or folder:PATH (default: the recipe's)")
    parser.add_argument("--subset", type=positive_int,
                        help="use at most this many training images (stratified)")
    parser.add_argument("--batch-size", type=positive_int, help="images per training batch")
    parser.add_argument("--seed", type=non_negative_int, help="seed of the split and weights")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="set any recipe field, e.g. --set optimizer=sgd; repeatable")
    parser.add_argument("--min-lr", type=positive_float, default=1e-7,
                        help="first learning rate of the sweep (default: %(default)s)")
    parser.add_argument("--max-lr", type=positive_float, default=10.0,
                        help="last learning rate of the sweep (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=200,
                        help="training steps of the sweep, at least 5 (default: %(default)s)")
    parser.add_argument("--out", default="lr-find",
                        help="folder for lr_find.png and lr_find.json (default: %(default)s)")
    parser.set_defaults(epochs=None)


def run_lr_find(args, parser):
    """Handle `kerastricks lr-find`: check the flags, sweep, save the figure and print the result."""
    from kerastricks.recipes.cli import EXIT_USAGE, resolve_recipe
    from kerastricks.recipes.training import check_writable

    if args.max_lr <= args.min_lr:
        parser.error(f"--max-lr ({args.max_lr:g}) must be greater than --min-lr ({args.min_lr:g})")
    if args.steps < 5:
        parser.error(f"--steps must be at least 5, received {args.steps}")
    recipe = resolve_recipe(args, parser)
    out = Path(args.out)
    try:
        check_writable(out)
    except OSError as error:
        print(f"kerastricks: error: cannot write to --out {out}: {error.strerror or error}. "
              f"Choose a writable folder.", file=sys.stderr)
        return EXIT_USAGE

    from kerastricks.recipes.data import load_dataset

    data = load_dataset(recipe.dataset, subset=recipe.subset, validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)
    print(f"Sweeping the learning rate of {recipe.name} on {data.name} from {args.min_lr:g} to "
          f"{args.max_lr:g} over at most {args.steps} steps.")
    result = find_recipe_learning_rate(recipe, data, min_lr=args.min_lr, max_lr=args.max_lr,
                                       num_steps=args.steps)
    save_result(result, out)
    print(f"Suggested learning rate: {result.suggestion:.3g} (where the smoothed loss falls "
          f"fastest; the lowest loss was at {result.min_loss_learning_rate:.3g}).")
    print(f"Figure: {out / 'lr_find.png'}")
    print(f"Try: kerastricks run {args.recipe} --set learning_rate={result.suggestion:.3g}")
    return 0


def find_recipe_learning_rate(recipe, data, min_lr=1e-7, max_lr=10.0, num_steps=200):
    """Prepare the recipe's model as `train` does and run `find_learning_rate` on its batches.

    The model is built, adapted and fed the same (augmented) training pipeline as a run, then
    recompiled with a constant learning rate, because the finder sets the rate at every step.
    """
    import keras

    from kerastricks.callbacks import find_learning_rate
    from kerastricks.recipes.training import compile_model, prepare_training

    keras.utils.set_random_seed(recipe.seed)
    model, train_data = prepare_training(recipe, data)
    compile_model(recipe, model)
    return find_learning_rate(model, train_data, min_lr=min_lr, max_lr=max_lr,
                              num_steps=num_steps, seed=recipe.seed)


def save_result(result, folder):
    """Write `lr_find.png` (the figure) and `lr_find.json` (the numbers) into `folder`."""
    from kerastricks.callbacks import figure_to_png

    folder = Path(folder)
    (folder / "lr_find.png").write_bytes(figure_to_png(result.plot()))
    (folder / "lr_find.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n",
                                         encoding="utf-8")
