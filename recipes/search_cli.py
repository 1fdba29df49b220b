"""The `kerastricks search` command: a keras-tuner search over trick combinations.

It searches the fields of a base recipe given by a search space (the default space, or a YAML or
JSON file), prints the ranked trials and writes them, with the trick importance table and figure,
into the project folder. Rerunning the same command with the same project folder resumes an
interrupted search without re-running completed trials.

Example, about a minute on two CPU cores:

    kerastricks search baseline --tuner random --trials 4 --max-epochs 2 --subset 600
"""

import os
import sys
from pathlib import Path

from kerastricks.recipes.cli import EXIT_INTERRUPTED, non_negative_int, positive_int
from kerastricks.recipes.distribute import (
    add_distribute_arguments, add_search_cluster_arguments, apply_search_cluster_arguments,
    create_strategy, recipe_for_strategy,
)

EXIT_FAILED = 1


def add_search_arguments(parser):
    """Add the `search` subcommand's arguments to `parser`."""
    parser.add_argument("recipe", nargs="?", default="baseline", metavar="RECIPE",
                        help="the base recipe: a name or a .json/.yaml file (default: %(default)s)")
    parser.add_argument("--space", metavar="FILE",
                        help="a .yaml or .json search space (default: the built-in trick space)")
    parser.add_argument("--tuner", default="hyperband", choices=("hyperband", "bayesian", "random", "grid"),
                        help="the keras-tuner tuner (default: %(default)s)")
    parser.add_argument("--objective", default="val_accuracy",
                        help="the logged metric to optimize (default: %(default)s)")
    parser.add_argument("--direction", choices=("max", "min"),
                        help="whether to maximize or minimize the objective (default: inferred from its name)")
    parser.add_argument("--trials", type=positive_int,
                        help="the number of trials (default: 10 for random and bayesian, all "
                             "combinations for grid, the brackets' count for hyperband)")
    parser.add_argument("--max-epochs", type=positive_int, default=3,
                        help="training epochs of a trial, Hyperband's largest (default: %(default)s)")
    parser.add_argument("--factor", type=positive_int, default=3,
                        help="Hyperband's reduction factor, >= 2 (default: %(default)s)")
    parser.add_argument("--project", metavar="DIR",
                        help="the project folder; an existing one of the same search is resumed "
                             "(default: searches/<recipe name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing project folder and start afresh")
    parser.add_argument("--retrain", action="store_true",
                        help="retrain the best recipe on training + validation images and "
                             "evaluate it on the test split")
    parser.add_argument("--top", type=positive_int, default=10,
                        help="the number of best trials to print (default: %(default)s)")
    parser.add_argument("--dataset", help="data set name or folder:PATH (default: the recipe's)")
    parser.add_argument("--subset", type=positive_int,
                        help="train on at most this many images (stratified), for quick searches")
    parser.add_argument("--batch-size", type=positive_int, help="images per training batch")
    parser.add_argument("--seed", type=non_negative_int, help="seed of the split, weights and tuner")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="set a field of the base recipe, e.g. --set width=16; repeatable")
    parser.add_argument("--quiet", action="store_true",
                        help="hide Keras's per-epoch progress and keras-tuner's trial tables")
    add_distribute_arguments(parser, batch_scaling=False)
    add_search_cluster_arguments(parser)
    # `resolve_recipe` also reads `--epochs`, which the search sets through --max-epochs.
    parser.set_defaults(epochs=None)


def run_search_command(args, parser):
    """Run the `search` subcommand; return the exit status."""
    from kerastricks.recipes.cli import resolve_recipe
    from kerastricks.recipes.search_defaults import default_space
    from kerastricks.recipes.search_space import SearchSpace

    # Before the tuner is created: keras-tuner reads its variables then.
    role = apply_search_cluster_arguments(args, parser)
    if role not in (None, "chief") and args.overwrite:
        parser.error("--overwrite on a worker would delete the chief's project folder; "
                     "pass it to the chief only")
    # Before any other TensorFlow operation: the strategy may split the CPU into devices.
    strategy = create_strategy(args.distribute)
    base = recipe_for_strategy(resolve_recipe(args, parser), strategy)
    space = SearchSpace.from_file(args.space, base=base) if args.space else default_space(base)
    project = Path(args.project) if args.project else Path("searches") / base.name

    from kerastricks.recipes import search
    from kerastricks.recipes.data import load_dataset

    data = load_dataset(base.dataset, subset=base.subset, validation_split=base.validation_split,
                        batch_size=base.batch_size, seed=base.seed)
    tuner = search.create_tuner(
        space, data, project, tuner=args.tuner, objective=args.objective, direction=args.direction,
        max_trials=args.trials, max_epochs=args.max_epochs, factor=args.factor,
        overwrite=args.overwrite, verbose=0 if args.quiet else 2,
        strategy=strategy if strategy.num_replicas_in_sync > 1 else None,
    )
    noun = "hyperparameter" if len(space.entries) == 1 else "hyperparameters"
    print(f"Searching {len(space.entries)} {noun} of {base.name} on {data.name} with "
          f"{args.tuner}, objective {tuner.oracle.objective.name} ({tuner.oracle.objective.direction}). "
          f"Project: {project}")
    if strategy.num_replicas_in_sync > 1:
        print(f"Distributed ({args.distribute}): each trial trains on "
              f"{strategy.num_replicas_in_sync} replicas, global batch {base.batch_size}.")
    if role is not None:
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        print(f"Distributed search: the chief oracle listens on {address}." if role == "chief" else
              f"Distributed search: worker {role} of the chief oracle at {address}.", flush=True)
    try:
        rows = search.run_search(tuner, verbose=0 if args.quiet else 1)
    except KeyboardInterrupt:
        print(f"kerastricks: interrupted; rerun the same command to resume the search in {project}.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as error:
        # keras-tuner stops after several consecutive failed trials and raises RuntimeError.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"kerastricks: error: the search stopped: {first_line} See the trial.json files in "
              f"{project} for each failure.", file=sys.stderr)
        return EXIT_FAILED
    if search.is_search_worker():
        return 0
    _report(tuner, rows, space, project, args.top)
    if args.retrain:
        _retrain(tuner, data, project, args.quiet)
    return 0


def _report(tuner, rows, space, project, top):
    from kerastricks.recipes import importance

    objective = tuner.oracle.objective
    print()
    if not rows:
        print(f"No completed trials in {project}.")
        return
    print(f"Best {min(top, len(rows))} of {len(rows)} completed trials by {objective.name}:")
    print(importance.format_table(rows, space.names, top=top))
    csv_path, json_path = importance.write_results(rows, space.names, project, objective)
    table = importance.trick_importance(rows, space.names, objective.direction)
    paths = importance.write_importance(table, project, objective.name)
    print()
    print("Trick importance (spread of the mean objective across values):")
    for item in table:
        print(f"  {item['hyperparameter']:<36} {item['spread']:.4f}")
    print(f"Results: {csv_path}, {json_path}")
    print(f"Importance: {', '.join(str(path) for path in paths)}")
    print(f"TensorBoard (HParams tab): tensorboard --logdir {Path(project) / 'logs'}")


def _retrain(tuner, data, project, quiet):
    from kerastricks.recipes.search import retrain_best
    from kerastricks.recipes.training import make_run_dir

    run_dir = make_run_dir(Path(project) / "best", tuner.hypermodel.space.base)
    print()
    print(f"Retraining the best recipe on {len(data.y_train) + len(data.y_validation)} training and "
          f"validation images for {tuner.max_epochs} epochs.")
    recipe, metrics = retrain_best(tuner, data, run_dir, verbose=0 if quiet else 2)
    print(f"Best recipe: test_accuracy {metrics['test_accuracy']:.4f}, test_loss {metrics['test_loss']:.4f}")
    print(f"Run folder: {run_dir}")
