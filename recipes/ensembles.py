"""Ensembles of trained networks: loading members and combining their predictions.

Members are trained models from run folders or `.keras` files: independent runs from different
seeds, the snapshots or last checkpoints of one run, or the fold models of a cross-validation.
Their class probabilities are combined by averaging, weighted averaging, majority voting, or
stacking (a second learner fitted on out-of-fold predictions only), optionally over test-time
views of each image.

Reference:
    X.-S. Wei, "Must Know Tips/Tricks in Deep Neural Networks", section 8 (ensembles).
"""

import dataclasses
import re
from pathlib import Path

import keras
import numpy as np

# Importing kerastricks.layers registers its custom layers, so saved members load.
from kerastricks.layers import predict_with_views


@dataclasses.dataclass
class Member:
    """One trained network of an ensemble.

    Attributes:
        name: a short label for tables, such as the run folder or file name.
        model: the Keras model, which outputs class probabilities.
        source: the file it was loaded from, or `None`.
    """

    name: str
    model: keras.Model
    source: str = None

    @property
    def input_shape(self):
        """The image shape the model takes, without the batch dimension."""
        return tuple(self.model.input_shape[1:])

    @property
    def num_classes(self):
        """The number of classes the model outputs."""
        return int(self.model.output_shape[-1])


def load_members(paths, last=None):
    """Load ensemble members from run folders, folders of `.keras` files, or `.keras` files.

    A run folder (one with `model.keras`) gives its final model. Any other folder, such as a
    run's `snapshots/` or `checkpoints/`, gives all its `.keras` files in natural order
    (`snapshot-2` before `snapshot-10`), or only the last `last` of them.

    Args:
        paths: a list of paths.
        last: for folders of `.keras` files, keep only the last this many files. Defaults to
            `None` (all files).

    Returns:
        A list of `Member`s, checked with `check_compatible`.

    Raises:
        ValueError: for an empty list, a missing path, a folder without `.keras` files, `last`
            larger than the files in a folder, or incompatible members.
    """
    if not paths:
        raise ValueError("The ensemble received no members. Pass at least one run folder or .keras file.")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise ValueError(f"`last` must be a positive integer or None. Received: last={last!r}.")
    files = []
    for path in map(Path, paths):
        files += _member_files(path, last)
    members = [
        Member(_member_name(file), keras.saving.load_model(file, compile=False), str(file))
        for file in files
    ]
    check_compatible(members)
    return members


def _member_files(path, last):
    if path.is_file() and path.suffix == ".keras":
        return [path]
    if path.is_dir() and (path / "model.keras").is_file():
        return [path / "model.keras"]
    if path.is_dir():
        files = sorted(path.glob("*.keras"), key=_natural_key)
        if not files:
            raise ValueError(
                f"No .keras files in {path}. Pass a run folder, a folder of snapshots or "
                f"checkpoints, or .keras files."
            )
        if last is not None and last > len(files):
            raise ValueError(
                f"`last` is larger than the number of checkpoints written: {path} contains "
                f"{len(files)}. Received: last={last}. Use last <= {len(files)}."
            )
        return files[-last:] if last is not None else files
    raise ValueError(f"Ensemble member not found: {path}. Pass a run folder or a .keras file.")


def _natural_key(path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _member_name(file):
    if file.name == "model.keras":
        return file.parent.name
    return f"{file.parent.name}/{file.stem}"


def check_compatible(members):
    """Raise `ValueError` unless all members take the same image shape and output the same classes.

    The message names the first member and the first one that differs from it.
    """
    if not members:
        raise ValueError("The ensemble received no members. Pass at least one member.")
    first = members[0]
    for member in members[1:]:
        if member.num_classes != first.num_classes:
            raise ValueError(
                f"Ensemble members must output the same number of classes, but {first.name!r} "
                f"outputs {first.num_classes} and {member.name!r} outputs {member.num_classes}. "
                f"Combine only models trained on the same data set."
            )
        if member.input_shape != first.input_shape:
            raise ValueError(
                f"Ensemble members must take the same input shape, but {first.name!r} takes "
                f"{first.input_shape} and {member.name!r} takes {member.input_shape}. Combine "
                f"only models trained on the same data set."
            )


def predict_members(members, images, batch_size=256, views=None):
    """Return each member's class probabilities for `images`, shaped `(members, images, classes)`.

    Args:
        members: a list of `Member`s.
        images: the images, channels last.
        batch_size: the number of images per prediction step. Defaults to `256`.
        views: `None` for the images as they are, or a view set of
            `kerastricks.layers.predict_with_views` (`"flip"`, `"ten_crop"`) to average each
            member's probabilities over test-time views. Defaults to `None`.
    """
    check_compatible(members)
    outputs = []
    for member in members:
        if views is None:
            outputs.append(member.model.predict(images, batch_size=batch_size, verbose=0))
        else:
            outputs.append(predict_with_views(member.model, images, views=views, batch_size=batch_size))
    return np.stack(outputs).astype("float64")


def average_probabilities(probabilities):
    """Return the mean over members of `(members, images, classes)` probabilities."""
    return np.mean(_check_probabilities(probabilities), axis=0)


def weighted_average(probabilities, weights):
    """Return the weighted mean over members; the weights are normalized to sum to 1.

    Raises:
        ValueError: for a weight vector whose length differs from the number of members, a
            negative weight, or weights that sum to 0.
    """
    probabilities = _check_probabilities(probabilities)
    weights = np.asarray(weights, dtype="float64")
    if weights.ndim != 1 or len(weights) != len(probabilities):
        raise ValueError(
            f"The ensemble weights need one value per member ({len(probabilities)} members). "
            f"Received: weights={weights.tolist()} ({weights.size} values)."
        )
    if np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(
            f"The ensemble weights must be >= 0 with a positive sum. Received: weights={weights.tolist()}."
        )
    return np.tensordot(weights / weights.sum(), probabilities, axes=1)


def majority_vote(probabilities):
    """Return per-class scores whose arg max is the class most members predict.

    The score of a class is the fraction of members that predict it, plus its mean probability
    times `0.5 / members`. That term is smaller than one vote, so it only breaks ties, in favour
    of the class with the higher mean probability.
    """
    probabilities = _check_probabilities(probabilities)
    count, _, classes = probabilities.shape
    votes = np.eye(classes)[np.argmax(probabilities, axis=-1)].mean(axis=0)
    return votes + probabilities.mean(axis=0) * (0.5 / count)


def accuracy(scores, labels):
    """Return the fraction of images whose arg-max class equals the label."""
    return float(np.mean(np.argmax(scores, axis=-1) == np.asarray(labels)))


def _check_probabilities(probabilities):
    probabilities = np.asarray(probabilities, dtype="float64")
    if probabilities.ndim != 3 or len(probabilities) == 0:
        raise ValueError(
            f"Member probabilities must be shaped (members, images, classes) with at least one "
            f"member. Received: shape={probabilities.shape}."
        )
    return probabilities


def compare_combinations(probabilities, labels, names, weights=None, extra=None):
    """Return table rows of each member's and each combination's accuracy, with the gains.

    Args:
        probabilities: the members' `(members, images, classes)` probabilities.
        labels: the true labels of the images.
        names: the members' names, in order.
        weights: the weights of the weighted average; `None` leaves that row out.
            Defaults to `None`.
        extra: more combinations as `{name: (images, classes) scores}`, such as stacking or
            test-time views. Defaults to `None`.

    Returns:
        A list of dictionaries with `name`, `kind` (`"member"` or `"ensemble"`), `accuracy`,
        `gain` (over the mean member accuracy) and `gain_over_best` (over the best member).
    """
    probabilities = _check_probabilities(probabilities)
    member_accuracies = [accuracy(member, labels) for member in probabilities]
    mean, best = float(np.mean(member_accuracies)), max(member_accuracies)
    rows = [_row(name, "member", value, mean, best) for name, value in zip(names, member_accuracies)]
    combinations = {"average": average_probabilities(probabilities)}
    if weights is not None:
        combinations["weighted average"] = weighted_average(probabilities, weights)
    combinations["majority vote"] = majority_vote(probabilities)
    combinations.update(extra or {})
    for name, scores in combinations.items():
        rows.append(_row(name, "ensemble", accuracy(scores, labels), mean, best))
    return rows


def _row(name, kind, value, mean, best):
    return {"name": name, "kind": kind, "accuracy": value, "gain": value - mean,
            "gain_over_best": value - best}


def format_table(rows):
    """Return the rows of `compare_combinations` as a Markdown table, accuracies in percent."""
    lines = ["| | accuracy | gain over mean member | gain over best member |",
             "|---|---:|---:|---:|"]
    for row in rows:
        label = row["name"] if row["kind"] == "member" else f"**{row['name']}**"
        lines.append(f"| {label} | {100 * row['accuracy']:.2f} % | "
                     f"{100 * row['gain']:+.2f} | {100 * row['gain_over_best']:+.2f} |")
    return "\n".join(lines)
