"""The learning-rate finder: an exponential learning-rate sweep that leaves the model unchanged.

The sweep trains for a few hundred steps while the learning rate grows geometrically from
`min_lr` to `max_lr`, records the loss of every step, and restores the weights and the optimizer
state afterwards. The loss first stays flat (learning rate too low), then falls, then explodes
(learning rate too high).

Reference:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, which
    introduced the learning-rate range test.
"""

import dataclasses
import math

import keras
import numpy as np

from kerastricks.callbacks import figures


@dataclasses.dataclass
class LRFinderResult:
    """The outcome of `find_learning_rate`.

    Attributes:
        learning_rates: the learning rate of each step taken.
        losses: the training loss of each step.
        smoothed_losses: `losses` after bias-corrected exponential smoothing.
        suggestion: the suggested learning rate (see `suggest_learning_rate`).
        min_loss_learning_rate: the learning rate at the lowest smoothed loss.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float
    min_loss_learning_rate: float

    def plot(self, **options):
        """Return a figure of the smoothed loss against the learning rate, suggestion marked."""
        return figures.plot_lr_finder(
            self.learning_rates, self.smoothed_losses, self.suggestion, **options
        )

    def to_dict(self):
        """Return the result as plain Python values, ready for JSON."""
        return {
            "learning_rates": self.learning_rates.tolist(),
            "losses": self.losses.tolist(),
            "smoothed_losses": self.smoothed_losses.tolist(),
            "suggestion": self.suggestion,
            "min_loss_learning_rate": self.min_loss_learning_rate,
        }


def exponential_schedule(min_lr, max_lr, num_steps):
    """Return `num_steps` learning rates spaced evenly on a log scale from `min_lr` to `max_lr`."""
    return np.geomspace(min_lr, max_lr, num_steps)


def smooth_losses(losses, smoothing=0.98):
    """Return the bias-corrected exponential moving average of `losses`.

    `average_t = smoothing * average_(t-1) + (1 - smoothing) * loss_t`, divided by
    `1 - smoothing ** (t + 1)` so that early values are not pulled towards zero.
    """
    smoothed, average = [], 0.0
    for step, loss in enumerate(np.asarray(losses, dtype="float64")):
        average = smoothing * average + (1.0 - smoothing) * loss
        smoothed.append(average / (1.0 - smoothing ** (step + 1)))
    return np.asarray(smoothed)


def suggest_learning_rate(learning_rates, smoothed_losses, skip_start=None):
    """Return the learning rate at which the smoothed loss falls fastest.

    The rule: take the sweep up to its lowest smoothed loss, compute the slope of the loss
    against `log10(learning_rate)`, and return the learning rate of the most negative slope. This
    lies below the minimum, where training is fast but still stable. When the loss never falls,
    the smallest learning rate is returned. The result always lies inside the swept range.

    The first steps are left out of the choice, because the loss of the first few batches drops
    steeply at any learning rate (the network leaves its initial outputs), which would make the
    smallest rates look best. `skip_start` is the number of steps left out; `None` leaves out a
    tenth of the sweep.
    """
    rates = np.asarray(learning_rates, dtype="float64")
    losses = np.asarray(smoothed_losses, dtype="float64")
    finite = np.isfinite(losses)
    if not finite.any():
        return float(rates[0])
    lowest = int(np.argmin(np.where(finite, losses, np.inf)))
    if lowest < 2:
        return float(rates[0])
    slopes = np.gradient(losses[: lowest + 1], np.log10(rates[: lowest + 1]))
    skip = len(rates) // 10 if skip_start is None else skip_start
    if skip >= lowest:
        skip = 0
    return float(rates[skip + int(np.argmin(slopes[skip:]))])


def _batches(data, batch_size, seed):
    """Yield `(x, y)` batches forever from a `tf.data.Dataset` or a pair of arrays."""
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(
                "`data` must be a tf.data.Dataset of (x, y) batches or an (x, y) pair of arrays. "
                f"Received: a {type(data).__name__} of length {len(data)}."
            )
        x, y = (np.asarray(part) for part in data)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(
                f"`data` must hold as many labels as inputs, and at least one. "
                f"Received: {len(x)} inputs and {len(y)} labels."
            )
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                index = order[start:start + batch_size]
                yield x[index], y[index]
    import tensorflow as tf

    if not isinstance(data, tf.data.Dataset):
        raise TypeError(
            "`data` must be a tf.data.Dataset of (x, y) batches or an (x, y) pair of arrays. "
            f"Received: {type(data).__name__}."
        )
    yield from data.repeat()


def _check_arguments(model, min_lr, max_lr, num_steps, smoothing, divergence_factor):
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ValueError(
            "find_learning_rate needs a compiled model with an optimizer and a loss. "
            "Call model.compile(optimizer=..., loss=...) first."
        )
    if not isinstance(model.optimizer._learning_rate, keras.Variable):
        raise ValueError(
            "find_learning_rate sets the learning rate at every step, so the optimizer must be "
            "created with a float learning rate, not a schedule. "
            f"Received: learning_rate={model.optimizer._learning_rate!r}."
        )
    if not (isinstance(min_lr, (int, float)) and min_lr > 0):
        raise ValueError(f"`min_lr` must be a positive number. Received: min_lr={min_lr!r}.")
    if not (isinstance(max_lr, (int, float)) and max_lr > min_lr):
        raise ValueError(
            f"`max_lr` must be greater than `min_lr` ({min_lr}). Received: max_lr={max_lr!r}."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 5:
        raise ValueError(
            f"`num_steps` must be an integer of at least 5. Received: num_steps={num_steps!r}."
        )
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"`smoothing` must be in [0, 1). Received: smoothing={smoothing!r}.")
    if not divergence_factor > 1.0:
        raise ValueError(
            f"`divergence_factor` must be greater than 1. "
            f"Received: divergence_factor={divergence_factor!r}."
        )


def find_learning_rate(model, data, min_lr=1e-7, max_lr=10.0, num_steps=200, batch_size=32,
                       smoothing=0.98, divergence_factor=4.0, seed=0):
    """Sweep the learning rate exponentially, record the loss, and restore the model.

    Args:
        model: a compiled Keras model whose optimizer has a float learning rate.
        data: a `tf.data.Dataset` of `(x, y)` batches, or an `(x, y)` pair of arrays that is
            shuffled and batched here.
        min_lr: the first learning rate. Defaults to `1e-7`.
        max_lr: the last learning rate. Defaults to `10.0`.
        num_steps: the number of training steps of the sweep. Defaults to `200`.
        batch_size: the batch size for array `data`. Defaults to `32`.
        smoothing: the factor of the exponential smoothing of the loss. Defaults to `0.98`.
        divergence_factor: stop early once the smoothed loss exceeds this multiple of its
            minimum, or is not finite. Defaults to `4.0`.
        seed: the seed of the shuffling of array `data`. Defaults to `0`.

    Returns:
        An `LRFinderResult`. The model's weights (non-trainable ones included), the optimizer's
        state and its learning rate are as they were before the call.

    Example:

    >>> result = find_learning_rate(model, (x_train, y_train), num_steps=100)  # doctest: +SKIP
    >>> model.optimizer.learning_rate = result.suggestion  # doctest: +SKIP
    """
    _check_arguments(model, min_lr, max_lr, num_steps, smoothing, divergence_factor)
    batches = _batches(data, batch_size, seed)
    first_x, first_y = next(batches)
    if not model.built:
        model(first_x[:1])
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    # Save everything a training step changes, so the sweep leaves no trace.
    saved_weights = model.get_weights()
    saved_optimizer = [keras.ops.convert_to_numpy(v) for v in optimizer.variables]

    rates = exponential_schedule(min_lr, max_lr, num_steps)
    losses, taken = [], []
    best = math.inf
    try:
        batch = (first_x, first_y)
        for step, rate in enumerate(rates):
            optimizer.learning_rate = float(rate)
            loss = float(model.train_on_batch(*batch, return_dict=True)["loss"])
            losses.append(loss)
            taken.append(rate)
            smoothed = smooth_losses(losses, smoothing)[-1]
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or (step > 0 and smoothed > divergence_factor * best):
                break
            batch = next(batches)
    finally:
        model.set_weights(saved_weights)
        for variable, value in zip(optimizer.variables, saved_optimizer):
            variable.assign(value)
        model.reset_metrics()

    taken = np.asarray(taken)
    losses = np.asarray(losses)
    smoothed = smooth_losses(losses, smoothing)
    finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
    return LRFinderResult(
        learning_rates=taken,
        losses=losses,
        smoothed_losses=smoothed,
        suggestion=suggest_learning_rate(taken, smoothed),
        min_loss_learning_rate=float(taken[int(np.argmin(finite))]),
    )
