"""Argument checks shared by the activation layers and initializers."""

import math
import numbers


def check_real(argument, value):
    """Return `value` as a float, or raise unless it is a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{argument} must be a real number. "
            f"Received: {argument}={value!r} of type {type(value).__name__}."
        )
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite. Received: {argument}={value!r}.")
    return float(value)


def check_slope(argument, value, *, allow_zero=True):
    """Raise unless `value` is a negative slope in [0, 1) (or (0, 1)), else return it as float."""
    value = check_real(argument, value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not low_ok or value >= 1.0:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(
            f"{argument} must be a negative slope in {interval}: a rectifier's slope for "
            f"negative inputs is at least 0 and below the slope 1 of positive inputs. "
            f"Received: {argument}={value!r}."
        )
    return value
