"""The `kerastricks ensemble` command: build or load members, combine them, and report.

Members come from one of three sources: run folders or `.keras` files (`--members`), the same
recipes trained from several seeds (`--seeds`), or a k-fold cross-validation of recipes
(`--folds`, optionally keeping the `--top-k` best), which also enables stacking. Each member and
each combination is evaluated on the test split; the table is printed and saved as
`ensemble.md` and `ensemble.json` in the output folder.
"""

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from kerastricks.recipes.spec import RecipeError


def add_ensemble_arguments(parser, positive_int):
    """Add the `ensemble` subcommand's own flags to `parser`."""
    parser.add_argument("recipes", nargs="*", metavar="RECIPE",
                        help="recipe names or files to train as members (not with --members)")
    parser.add_argument("--members", nargs="+", metavar="PATH",
                        help="load members from run folders, folders of .keras files "
                             "(snapshots/, checkpoints/) or .keras files")
    parser.add_argument("--last", type=positive_int, metavar="K",
                        help="with --members: use only the last K files of each folder")
    parser.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                        help="train each recipe from N seeds: the recipe's seed, seed + 1, ... "
                             "(default: %(default)s)")
    parser.add_argument("--folds", type=positive_int, metavar="K",
                        help="cross-validate each recipe with K folds instead; enables stacking")
    parser.add_argument("--top-k", type=positive_int, metavar="K",
                        help="with --folds: keep the K recipes with the best mean fold accuracy")
    parser.add_argument("--weights", metavar="W1,W2,...",
                        help="weights of the weighted average, one per member (default: each "
                             "member's validation accuracy)")
    parser.add_argument("--views", choices=("flip", "ten_crop"),
                        help="also average each member over these test-time views")
    parser.add_argument("--meta", choices=("logistic", "keras"), default="logistic",
                        help="the stacking meta-learner (default: %(default)s)")
    parser.add_argument("--output", help="folder for ensemble.md and ensemble.json "
                                         "(default: a new ensemble-<time> folder in --logdir)")


def check_arguments(args, parser):
    """Reject contradicting flag combinations through `parser.error`."""
    if args.members and args.recipes:
        parser.error("pass either RECIPE names or --members, not both")
    if not args.members and not args.recipes:
        parser.error("pass at least one RECIPE to train, or --members to load")
    if args.members and (args.folds or args.seeds != 1):
        parser.error("--folds and --seeds train new members; they cannot be used with --members")
    if args.members and (args.overrides or args.epochs):
        parser.error("--epochs and --set change training; they do not apply to loaded --members")
    if args.last and not args.members:
        parser.error("--last selects files of --members folders; pass --members")
    if args.top_k and not args.folds:
        parser.error("--top-k ranks cross-validated recipes; pass --folds too")
    if args.folds and args.seeds != 1:
        parser.error("--folds and --seeds are separate ensembles; use one of them")
    for flag in ("run_dir", "resume", "overwrite"):
        if getattr(args, flag, None):
            parser.error(f"--{flag.replace('_', '-')} applies to 'kerastricks run' only")


def run_ensemble(args, parser):
    """Build the members, evaluate every combination, print and save the table; return 0."""
    from kerastricks.recipes.cli import resolve_recipe
    from kerastricks.recipes.stacking import StackingEnsemble

    check_arguments(args, parser)
    if args.members:
        bases, data = _load_bases(args)
        results = None
    else:
        recipes = [resolve_recipe(argparse.Namespace(**{**vars(args), "recipe": name}), parser)
                   for name in args.recipes]
        if args.weights:
            # Check the weights before any training, against the number of members to come.
            count = (args.top_k or len(recipes)) if args.folds else len(recipes) * args.seeds
            _parse_weights(args.weights, count)
        data = _load_data(recipes[0])
        bases, results = _train_bases(recipes, data, args)

    names = [name for name, _ in bases]
    print(f"Evaluating {len(bases)} members on {len(data.y_test)} test images of {data.name}.")
    test = np.stack([predict(data.x_test, None) for _, predict in bases])
    weights = _weights(args, bases, data, results)
    extra = {}
    if args.views:
        viewed = np.stack([predict(data.x_test, args.views) for _, predict in bases])
        extra[f"average over {args.views} views"] = viewed.mean(axis=0)
    if results is not None:
        stacker = StackingEnsemble(meta=args.meta, seed=results[0].recipe.seed).fit(results)
        extra[f"stacking ({args.meta})"] = stacker.predict_proba(test)

    from kerastricks.recipes.ensembles import compare_combinations, format_table

    rows = compare_combinations(test, data.y_test, names, weights=weights, extra=extra)
    table = format_table(rows)
    print()
    print(table)
    output = _output_folder(args)
    (output / "ensemble.md").write_text(table + "\n", encoding="utf-8")
    (output / "ensemble.json").write_text(json.dumps(
        {"dataset": data.name, "test_images": int(len(data.y_test)), "weights": list(weights),
         "rows": rows, "command": sys.argv}, indent=2) + "\n", encoding="utf-8")
    print(f"\nSaved {output / 'ensemble.md'} and {output / 'ensemble.json'}.")
    return 0


def _load_data(recipe):
    from kerastricks.recipes.data import load_dataset

    return load_dataset(recipe.dataset, subset=recipe.subset, validation_split=recipe.validation_split,
                        batch_size=recipe.batch_size, seed=recipe.seed)


def _load_bases(args):
    """Return ([(name, predict)], data) for members loaded from --members."""
    from kerastricks.recipes.ensembles import load_members
    from kerastricks.recipes.spec import Recipe

    try:
        members = load_members(args.members, last=args.last)
    except ValueError as error:
        raise RecipeError(str(error)) from None
    recipe = _find_recipe(members[0].source)
    if args.dataset:
        recipe = (recipe or Recipe()).replace(dataset=args.dataset)
    if recipe is None:
        raise RecipeError(
            f"Cannot tell which data set {members[0].source} was trained on: no recipe.json "
            f"next to it. Pass --dataset."
        )
    overrides = {key: getattr(args, key) for key in ("subset", "seed", "batch_size")
                 if getattr(args, key) is not None}
    data = _load_data(recipe.replace(**overrides))
    if members[0].input_shape != tuple(data.input_shape):
        raise RecipeError(
            f"The members take images of shape {members[0].input_shape}, but {data.name} has "
            f"{tuple(data.input_shape)}. Pass the --dataset they were trained on."
        )
    return [(member.name, _member_predictor(member)) for member in members], data


def _find_recipe(source):
    from kerastricks.recipes.spec import Recipe

    for folder in Path(source).parents[:2]:
        if (folder / "recipe.json").is_file():
            return Recipe.from_file(folder / "recipe.json")
    return None


def _member_predictor(member):
    from kerastricks.recipes.ensembles import predict_members

    return lambda images, views: predict_members([member], images, views=views)[0]


def _train_bases(recipes, data, args):
    """Return ([(name, predict)], cross-validation results or None) for trained members."""
    from kerastricks.recipes.crossval import rank_recipes
    from kerastricks.recipes.ensembles import Member, load_members
    from kerastricks.recipes.training import make_run_dir, train

    for recipe in recipes[1:]:
        if recipe.dataset != recipes[0].dataset:
            raise RecipeError(
                f"All recipes of an ensemble must use the same data set, but {recipes[0].name!r} "
                f"uses {recipes[0].dataset!r} and {recipe.name!r} uses {recipe.dataset!r}."
            )
    verbose = 0 if args.quiet else 2
    if args.folds:
        print(f"Cross-validating {len(recipes)} recipes with {args.folds} folds.")
        results = rank_recipes(recipes, data, args.folds, args.top_k, args.logdir, verbose,
                               deterministic=args.seed is not None)
        bases = []
        for result in results:
            members = [Member(f"fold{i + 1}", model) for i, model in enumerate(result.models)]
            name = f"{result.recipe.name} ({args.folds}-fold mean {100 * result.mean_accuracy:.2f} %)"
            bases.append((name, _fold_predictor(members)))
        return bases, results

    bases = []
    for recipe in recipes:
        for seed in range(recipe.seed, recipe.seed + args.seeds):
            # Every seed trains on the same split (the recipe's), so only the initialization and
            # the training order differ between members.
            seeded = recipe.replace(seed=seed)
            run_dir = make_run_dir(args.logdir, seeded)
            print(f"Training {seeded.name} with seed {seed} in {run_dir}.")
            train(seeded, data, run_dir, verbose=verbose, deterministic=args.seed is not None)
            (member,) = load_members([run_dir])
            member.name = f"{seeded.name} seed {seed}"
            bases.append((member.name, _member_predictor(member)))
    return bases, None


def _fold_predictor(members):
    from kerastricks.recipes.ensembles import predict_members

    return lambda images, views: predict_members(members, images, views=views).mean(axis=0)


def _parse_weights(text, count):
    try:
        weights = [float(value) for value in text.split(",")]
    except ValueError:
        raise RecipeError(f"--weights must be numbers separated by commas. Received: {text!r}.") from None
    if len(weights) != count:
        raise RecipeError(
            f"--weights needs one value per member ({count} members). "
            f"Received: {len(weights)} values ({text})."
        )
    if min(weights) < 0 or not sum(weights) > 0:
        raise RecipeError(f"--weights must be >= 0 with a positive sum. Received: {text}.")
    return weights


def _weights(args, bases, data, results):
    if args.weights:
        return _parse_weights(args.weights, len(bases))
    if results is not None:
        return [result.mean_accuracy for result in results]
    return [float(np.mean(np.argmax(predict(data.x_validation, None), axis=1) == data.y_validation))
            for _, predict in bases]


def _output_folder(args):
    if args.output:
        folder = Path(args.output)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(args.logdir) / f"ensemble-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
