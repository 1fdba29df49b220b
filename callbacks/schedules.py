"""Learning-rate schedules: one-cycle, and a factory for the schedules a recipe can name.

Keras 3 already has step decay (`ExponentialDecay` with `staircase=True`), cosine decay with a
linear warmup (`CosineDecay` with `warmup_target`), SGDR warm restarts (`CosineDecayRestarts`) and
"divide by 10 when validation stops improving" (the `ReduceLROnPlateau` callback). It lacks the
one-cycle policy, which `OneCycle` adds. `learning_rate_schedule` builds any of them from a name,
a base learning rate and the run's length, with the options counted in epochs.
"""

import math

import keras
from keras import ops

SCHEDULES = ("constant", "step", "plateau", "cosine", "sgdr", "one_cycle")

# The options each schedule accepts, with their defaults; epochs may be fractional.
SCHEDULE_OPTIONS = {
    "constant": {},
    "step": {"drop_every": None, "factor": 0.1},
    "plateau": {"factor": 0.1, "patience": 2, "min_delta": 1e-4, "monitor": "val_loss"},
    "cosine": {"warmup_epochs": 0.0, "alpha": 0.0},
    "sgdr": {"first_cycle_epochs": None, "t_mul": 2.0, "m_mul": 1.0, "alpha": 0.0},
    "one_cycle": {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
}


@keras.saving.register_keras_serializable(package="kerastricks")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """The one-cycle learning-rate policy: a cosine rise to a peak, then a cosine fall.

    The learning rate starts at `max_learning_rate / div_factor`, rises along half a cosine to
    `max_learning_rate` at step `peak_step = round(pct_start * total_steps)`, then falls along
    half a cosine to `max_learning_rate / (div_factor * final_div_factor)` at `total_steps`, and
    stays there afterwards. With `a` the start and `b` the end of a phase and `t` the fraction of
    the phase completed:

        lr = b + (a - b) / 2 * (1 + cos(pi * t))

    The defaults (`pct_start=0.3`, `div_factor=25`, `final_div_factor=1e4`, cosine phases) are
    those of fastai's `fit_one_cycle` and PyTorch's `OneCycleLR`.

    Args:
        max_learning_rate: the peak learning rate.
        total_steps: the number of training steps of the whole cycle (epochs times steps per
            epoch).
        pct_start: the fraction of `total_steps` spent rising. Defaults to `0.3`.
        div_factor: the peak divided by the initial learning rate. Defaults to `25.0`.
        final_div_factor: the initial divided by the final learning rate. Defaults to `1e4`.
        name: the schedule's name. Defaults to `"OneCycle"`.

    Example:

    >>> schedule = OneCycle(max_learning_rate=0.1, total_steps=100)
    >>> [round(float(schedule(step)), 6) for step in (0, 30, 100)]
    [0.004, 0.1, 4e-07]

    Reference:
        Smith and Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large
        Learning Rates", 2017 (arXiv:1708.07120).
    """

    def __init__(self, max_learning_rate, total_steps, pct_start=0.3, div_factor=25.0,
                 final_div_factor=1e4, name="OneCycle"):
        _check_positive("max_learning_rate", max_learning_rate)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 2:
            raise ValueError(
                f"total_steps must be an integer >= 2, the number of steps of the cycle. "
                f"Received: total_steps={total_steps!r}."
            )
        if not 0.0 < pct_start < 1.0:
            raise ValueError(
                f"pct_start must be between 0 and 1 (exclusive), the fraction of the steps spent "
                f"rising. Received: pct_start={pct_start!r}."
            )
        _check_positive("div_factor", div_factor)
        _check_positive("final_div_factor", final_div_factor)

        self.max_learning_rate = float(max_learning_rate)
        self.total_steps = total_steps
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name
        # Both phases have at least one step, so neither divides by zero.
        self.peak_step = min(max(1, round(pct_start * total_steps)), total_steps - 1)
        self.initial_learning_rate = self.max_learning_rate / self.div_factor
        self.final_learning_rate = self.initial_learning_rate / self.final_div_factor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = float(self.peak_step)
        rising = ops.clip(step / peak, 0.0, 1.0)
        falling = ops.clip((step - peak) / (self.total_steps - peak), 0.0, 1.0)
        rise = _cosine_between(self.initial_learning_rate, self.max_learning_rate, rising)
        fall = _cosine_between(self.max_learning_rate, self.final_learning_rate, falling)
        return ops.where(step <= peak, rise, fall)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }


def _cosine_between(start, end, fraction):
    return end + (start - end) * 0.5 * (1.0 + ops.cos(math.pi * fraction))


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}.")


def check_schedule(name, options):
    """Raise `ValueError` unless `name` is a schedule and `options` are its option names.

    Args:
        name: one of `SCHEDULES`.
        options: a mapping of option names to values; see `SCHEDULE_OPTIONS`.
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"Unknown learning-rate schedule. Expected one of {list(SCHEDULES)}. "
            f"Received: lr_schedule={name!r}."
        )
    if not isinstance(options, dict):
        raise TypeError(
            f"lr_schedule_options must be a mapping of option names to values. "
            f"Received: {options!r}."
        )
    allowed = SCHEDULE_OPTIONS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown option {unknown[0]!r} for the {name!r} schedule. Expected one of "
            f"{sorted(allowed)}. Received: lr_schedule_options={options!r}."
        )
    for key, value in options.items():
        if key == "monitor":
            if not isinstance(value, str):
                raise TypeError(f"monitor must be a metric name. Received: monitor={value!r}.")
        elif key == "min_delta":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"min_delta must be >= 0. Received: min_delta={value!r}.")
        elif key in ("alpha", "pct_start", "factor"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{key} must be a number. Received: {key}={value!r}.")
            if not 0.0 <= value < 1.0 or (key != "alpha" and value == 0):
                rule = ">= 0 and < 1" if key == "alpha" else "> 0 and < 1"
                raise ValueError(
                    f"The {name!r} schedule's option {key} must be {rule}. "
                    f"Received: lr_schedule_options={options!r}."
                )
        elif key == "warmup_epochs":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"warmup_epochs must be >= 0. Received: warmup_epochs={value!r}."
                )
        elif value is not None:
            _check_positive(key, value)


def learning_rate_schedule(name, learning_rate, epochs, steps_per_epoch, **options):
    """Build the named learning-rate schedule for a run of `epochs` epochs.

    Options counted in epochs are converted to steps with `steps_per_epoch`:

    - `constant` and `plateau`: return `learning_rate` itself, a float. `plateau` changes it
      from a `ReduceLROnPlateau` callback, see `plateau_callback`.
    - `step`: multiply by `factor` (default 0.1) every `drop_every` epochs (default
      `max(1, epochs // 3)`), through `ExponentialDecay(staircase=True)`.
    - `cosine`: rise linearly from 0 to `learning_rate` over `warmup_epochs` (default 0), then
      follow a cosine to `alpha * learning_rate` (default 0) at the end of the run, through
      `CosineDecay`.
    - `sgdr`: cosine cycles that restart at `learning_rate` (Loshchilov and Hutter, 2017); the
      first lasts `first_cycle_epochs` (default `max(1, epochs // 3)`), each next one `t_mul`
      times longer (default 2) and starts `m_mul` times lower (default 1), through
      `CosineDecayRestarts`.
    - `one_cycle`: `OneCycle` with `learning_rate` as the peak.

    Args:
        name: one of `SCHEDULES`.
        learning_rate: the base (or, for `one_cycle`, the peak) learning rate.
        epochs: the number of epochs of the run.
        steps_per_epoch: the number of training steps per epoch.
        **options: the schedule's options, see `SCHEDULE_OPTIONS`.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`, or a float for `constant` and
        `plateau`.

    Raises:
        ValueError: for an unknown schedule or option, or a value out of range.
    """
    check_schedule(name, options)
    _check_positive("steps_per_epoch", steps_per_epoch)
    options = {**SCHEDULE_OPTIONS[name], **options}
    total_steps = int(epochs * steps_per_epoch)
    schedules = keras.optimizers.schedules
    if name in ("constant", "plateau"):
        return float(learning_rate)
    if name == "step":
        drop_every = options["drop_every"] or max(1, epochs // 3)
        return schedules.ExponentialDecay(
            learning_rate, decay_steps=max(1, round(drop_every * steps_per_epoch)),
            decay_rate=options["factor"], staircase=True,
        )
    if name == "cosine":
        warmup_steps = round(options["warmup_epochs"] * steps_per_epoch)
        if warmup_steps == 0:
            return schedules.CosineDecay(learning_rate, total_steps, alpha=options["alpha"])
        return schedules.CosineDecay(
            0.0, max(1, total_steps - warmup_steps), alpha=options["alpha"],
            warmup_target=learning_rate, warmup_steps=warmup_steps,
        )
    if name == "sgdr":
        first_cycle = options["first_cycle_epochs"] or max(1, epochs // 3)
        return schedules.CosineDecayRestarts(
            learning_rate, first_decay_steps=max(1, round(first_cycle * steps_per_epoch)),
            t_mul=options["t_mul"], m_mul=options["m_mul"], alpha=options["alpha"],
        )
    return OneCycle(
        learning_rate, max(2, total_steps), pct_start=options["pct_start"],
        div_factor=options["div_factor"], final_div_factor=options["final_div_factor"],
    )


def plateau_callback(**options):
    """Return Keras's `ReduceLROnPlateau` with the `plateau` schedule's options.

    It multiplies the learning rate by `factor` (default 0.1, "divide by 10") when `monitor`
    (default `val_loss`) has not improved by `min_delta` for `patience` epochs (default 2).
    """
    check_schedule("plateau", options)
    options = {**SCHEDULE_OPTIONS["plateau"], **options}
    return keras.callbacks.ReduceLROnPlateau(
        monitor=options["monitor"], factor=options["factor"], patience=options["patience"],
        min_delta=options["min_delta"],
    )
