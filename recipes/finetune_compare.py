"""Experiment: the fine-tuning strategies, pre-training on some classes and fine-tuning on others.

Trick: fine-tuning a pre-trained CNN with a strategy chosen by data similarity and size, gradual
unfreezing, and discriminative learning rates. Source: the fine-tuning section of Wei's survey
"Must Know Tips/Tricks in Deep Neural Networks".

Data: Fashion-MNIST. A recipe CNN is pre-trained on all training images of classes 0 to 4
(T-shirt/top, Trouser, Pullover, Dress, Coat); then a copy is fine-tuned on images of classes 5
to 9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) under each strategy, and tested on all test images
of those classes. A network trained from scratch on the same images is the baseline. Every
variant runs twice: with 500 fine-tuning images (little data) and with all the training images
of classes 5 to 9 (much data).

Expected result: the strategies that train the upper layers beat the frozen-feature ones,
because shoes and bags differ from the pre-training garments. Training from scratch stays
close, since these five classes are easy to tell apart: with 500 fine-tuning images
`similar_large` led it by 0.01, and with 100 it led `similar_large` by 0.02 (one seed each).

Run time: about 2 minutes at the quick size on a shared 2-core CPU.

    kerastricks run finetune_compare --quick
    python -m kerastricks.recipes.finetune_compare --quick
"""

if __name__ == "__main__":
    from kerastricks.recipes.quiet import quiet_tensorflow

    quiet_tensorflow()

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastricks.callbacks import GradualUnfreezing  # noqa: E402
from kerastricks.recipes.experiments import (  # noqa: E402
    INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, TEST_ACCURACY, TRAIN_SECONDS, Column, Experiment,
    Verdict, accuracy_margin, row_of, slug,
)
from kerastricks.recipes.finetune import (  # noqa: E402
    DIFFERENT_LARGE_LEARNING_RATE_FACTOR, build_finetune_model, discriminative_optimizer,
)
from kerastricks.recipes.models import build_model  # noqa: E402
from kerastricks.recipes.run_state import write_json  # noqa: E402
from kerastricks.recipes.spec import Recipe  # noqa: E402

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
LEARNING_RATE = 1e-3


def network_recipe(seed):
    """Return the recipe of the network that is pre-trained (and trained from scratch)."""
    return Recipe(width=16, depth=2, dense_units=64, seed=seed)


def select_classes(images, labels, classes, limit=None, seed=0):
    """Return the images of `classes` with labels renumbered 0, 1, ..., at most `limit`."""
    mask = np.isin(labels, classes)
    images, labels = images[mask], np.searchsorted(classes, labels[mask]).astype("int32")
    if limit is not None and limit < len(labels):
        keep = np.random.default_rng(seed).permutation(len(labels))[:limit]
        images, labels = images[keep], labels[keep]
    return images, labels


def pretrain(images, labels, input_shape, epochs, seed, path):
    """Train the recipe CNN on the pre-training classes and save it to `path`."""
    recipe = network_recipe(seed)
    model = build_model(recipe, input_shape, len(PRETRAIN_CLASSES))
    model.compile(keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=epochs, batch_size=64, verbose=0)
    model.save(path)


def fine_tune_variants(base_path, input_shape, seed):
    """Yield `(name, model, optimizer, callbacks)` for each variant, each on a fresh base copy."""
    num_classes = len(FINETUNE_CLASSES)
    for strategy in ("similar_small", "similar_large", "different_small", "different_large"):
        base = keras.saving.load_model(base_path)
        model, _ = build_finetune_model(base, num_classes, input_shape, strategy,
                                        trainable_groups=2)
        factor = DIFFERENT_LARGE_LEARNING_RATE_FACTOR if strategy == "different_large" else 1.0
        yield strategy, model, keras.optimizers.Adam(LEARNING_RATE * factor), []

    base = keras.saving.load_model(base_path)
    model, _ = build_finetune_model(base, num_classes, input_shape, "similar_small")
    yield ("gradual unfreezing", model, keras.optimizers.Adam(LEARNING_RATE),
           [GradualUnfreezing(unfreeze_every=1)])

    base = keras.saving.load_model(base_path)
    model, _ = build_finetune_model(base, num_classes, input_shape, "different_large")
    optimizer, _ = discriminative_optimizer(model, LEARNING_RATE, factor=0.5)
    yield "discriminative rates", model, optimizer, []

    yield ("from scratch", build_model(network_recipe(seed), input_shape, num_classes),
           keras.optimizers.Adam(LEARNING_RATE), [])


SMALL_IMAGES = 500
VARIANTS = ("similar_small", "similar_large", "different_small", "different_large",
            "gradual unfreezing", "discriminative rates", "from scratch")
DATA_SIZES = {"500 images": SMALL_IMAGES, "all images": None}


def fine_tune(model, optimizer, callbacks, train, test, epochs, seed):
    """Fine-tune `model` on `train` and return its metrics on `test`."""
    keras.utils.set_random_seed(seed)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(*train, epochs=epochs, batch_size=32, callbacks=callbacks, verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(*test, verbose=0)
    return {
        "test_accuracy": float(accuracy), "test_loss": float(loss),
        "train_seconds": round(seconds, 3), "epochs": epochs, "train_images": len(train[1]),
        "test_images": len(test[1]),
        "trainable_parameters": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
    }


def run_strategies(experiment, base, data, folder, train_run):
    """Pre-train once, fine-tune every variant at both data sizes; return the rows.

    A finished variant folder whose `settings.json` matches is reused.
    """
    folder = Path(folder)
    x_pre, y_pre = select_classes(data.x_train, data.y_train, PRETRAIN_CLASSES)
    test = select_classes(data.x_test, data.y_test, FINETUNE_CLASSES)
    settings = {"dataset": data.name, "train_images": len(data.y_train), "epochs": base.epochs,
                "seed": base.seed}
    pretrained = folder / "pretrained"
    if not _finished(pretrained, settings):
        keras.utils.set_random_seed(base.seed)
        pretrained.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        pretrain(x_pre, y_pre, data.input_shape, base.epochs, base.seed, pretrained / "model.keras")
        model = keras.saving.load_model(pretrained / "model.keras")
        model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
        loss, accuracy = model.evaluate(*select_classes(data.x_test, data.y_test, PRETRAIN_CLASSES),
                                        verbose=0)
        _write(pretrained, settings, {
            "test_accuracy": float(accuracy), "test_loss": float(loss), "epochs": base.epochs,
            "train_seconds": round(time.perf_counter() - start, 3), "train_images": len(y_pre),
            "test_images": int(np.isin(data.y_test, PRETRAIN_CLASSES).sum()),
        })
    rows = [("pre-trained model (classes 0-4)", pretrained)]
    for size_label, limit in DATA_SIZES.items():
        train = select_classes(data.x_train, data.y_train, FINETUNE_CLASSES, limit, base.seed)
        done = {label: _finished(folder / slug(f"{label}, {size_label}"), settings)
                for label in VARIANTS}
        variants = fine_tune_variants(pretrained / "model.keras", data.input_shape, base.seed)
        for name, model, optimizer, callbacks in variants:
            label = f"{name}, {size_label}"
            run_dir = folder / slug(label)
            if not done[name]:
                print(f"[finetune_compare] fine-tuning {label!r} in {run_dir}", flush=True)
                _write(run_dir, settings,
                       fine_tune(model, optimizer, callbacks, train, test, base.epochs, base.seed))
            rows.append((label, run_dir))
    return rows


def _finished(run_dir, settings):
    path = Path(run_dir) / "settings.json"
    return ((Path(run_dir) / "metrics.json").is_file() and path.is_file()
            and json.loads(path.read_text(encoding="utf-8")) == settings)


def _write(run_dir, settings, metrics):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    write_json(run_dir / "settings.json", settings)
    # metrics.json last, so a folder without it is never taken for a finished variant.
    write_json(run_dir / "metrics.json", metrics)


FROZEN = ("similar_small", "different_small")
FINE_TUNED = ("similar_large", "different_large", "gradual unfreezing", "discriminative rates")


def verdict(rows):
    """Return the verdict on both halves of the claim, each beyond the noise of the test split.

    Little data: the best variant that starts from the pre-trained model beats training from
    scratch. Much data: the best variant that fine-tunes layers of the base beats the best one
    that keeps its features frozen.
    """
    def accuracies(size):
        return {name: row_of(rows, f"{name}, {size}") for name in VARIANTS}

    small, large = accuracies("500 images"), accuracies("all images")
    kept = max((n for n in VARIANTS if n != "from scratch"), key=lambda n: small[n]["test_accuracy"])
    tuned = max(FINE_TUNED, key=lambda n: large[n]["test_accuracy"])
    frozen = max(FROZEN, key=lambda n: large[n]["test_accuracy"])

    def compare(better, worse):
        margin = accuracy_margin(worse["test_accuracy"], worse.get("test_images", 5000))
        return better["test_accuracy"] - worse["test_accuracy"], margin

    small_gain, small_margin = compare(small[kept], small["from scratch"])
    large_gain, large_margin = compare(large[tuned], large[frozen])
    text = (f"with 500 images the best pre-trained variant, {kept}, reaches "
            f"{100 * small[kept]['test_accuracy']:.1f} % against "
            f"{100 * small['from scratch']['test_accuracy']:.1f} % from scratch "
            f"({100 * small_gain:+.1f} points, noise {100 * small_margin:.1f}); with all images "
            f"the best fine-tuned variant, {tuned}, reaches "
            f"{100 * large[tuned]['test_accuracy']:.1f} % against "
            f"{100 * large[frozen]['test_accuracy']:.1f} % for {frozen} "
            f"({100 * large_gain:+.1f} points, noise {100 * large_margin:.1f}), and training "
            f"from scratch {100 * large['from scratch']['test_accuracy']:.1f} %")
    small_holds, large_holds = small_gain > small_margin, large_gain > large_margin
    if small_holds and large_holds:
        return Verdict(SUPPORTED, f"Pre-trained features help with little data and fine-tuning "
                                  f"more layers pays with much: {text}.")
    if small_holds or large_holds:
        part = "little data" if small_holds else "much data"
        return Verdict(INCONCLUSIVE, f"Only the {part} half of the claim holds beyond the noise "
                                     f"here: {text}.")
    return Verdict(NOT_SUPPORTED, f"Neither half of the claim holds beyond the noise here: {text}.")


EXPERIMENT = Experiment(
    name="finetune_compare",
    title="Fine-tuning: the four strategies by data size",
    claim="How to fine-tune depends on the data: with little data similar to the pre-training "
          "data, train a new classifier on frozen features; with much data, fine-tune more "
          "layers, all of them (at a lower learning rate) when the data differ.",
    source="Survey section 4 (fine-tuning), after Yosinski et al. 2014.",
    recipe=network_recipe(0).replace(name="finetune_compare", dataset="fashion_mnist", epochs=4,
                                     diagnostics=False),
    quick={"subset": 6000},
    variants={f"{name}, {size}": {} for size in DATA_SIZES for name in VARIANTS},
    columns=(TEST_ACCURACY, Column("train_images", "images", "d"),
             Column("trainable_parameters", "trainable parameters at the end", "d"),
             TRAIN_SECONDS),
    verdict=verdict,
    runner=run_strategies,
    notes="Pre-training uses all training images of classes 0-4; fine-tuning uses 500 or all "
          "training images of classes 5-9, the same epochs and Adam at 1e-3 (a tenth of it for "
          "different_large). Test accuracy is on the test images of classes 5-9 (0-4 for the "
          "pre-trained model). Gradual unfreezing opens one layer group per epoch from "
          "similar_small, so with a single epoch it equals similar_small.",
)


if __name__ == "__main__":
    import sys

    from kerastricks.recipes.experiments import run_experiment_module

    sys.exit(run_experiment_module("finetune_compare", sys.argv[1:]))
