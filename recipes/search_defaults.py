"""The default search space: the tricks survey's areas, limited to the fields of today's `Recipe`.

Other fields join the `Recipe` over time, so the candidates below name fields that may not exist
yet. `default_space()` keeps only what the `Recipe` has and
accepts when it runs.
"""

import dataclasses

from kerastricks.recipes.search_space import Entry, SearchError, SearchSpace, check_value
from kerastricks.recipes.spec import Recipe

# Candidate entries of the default space, one group per area of the tricks survey. Only fields
# that the `Recipe` has at run time, and values that it accepts, go into `default_space()`.
DEFAULT_CANDIDATES = {
    # Data augmentation.
    "augmentation": {"values": [[], ["pad_crop"], ["translation"], ["pad_crop", "erasing"]]},
    # Pre-processing.
    "preprocessing": {"values": ["none", "center", "standardize_pixel", "zca"]},
    # Initialization.
    "initializer": {"values": ["he_normal", "he_leaky_normal", "glorot_uniform", "orthogonal"]},
    "lsuv": {"values": [False, True]},
    # Training: optimizer, learning rate, schedule, normalization.
    "optimizer": {"values": ["adam", "sgd", "rmsprop"]},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "lr_schedule": {"values": ["constant", "step", "cosine", "plateau"]},
    "batch_norm": {"values": [True, False]},
    # Activation functions, with the options of the leaky ones.
    "activation": {"values": ["relu", "leaky_relu", "prelu", "rrelu", "elu"]},
    "activation_options.negative_slope": {
        "values": [0.01, 0.1, 0.3], "when": {"activation": ["leaky_relu"]},
    },
    "activation_options.lower": {"values": [0.05, 0.125], "when": {"activation": ["rrelu"]}},
    "activation_options.upper": {"values": [0.25, 1 / 3], "when": {"activation": ["rrelu"]}},
    # Regularization.
    "l2": {"values": [0.0, 1e-5, 1e-4, 1e-3]},
    "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
    # Capacity, the knob behind the under- and over-fitting figures.
    "width": {"values": [16, 32, 64]},
    "depth": {"values": [1, 2, 3]},
}



def default_space(base=None):
    """Return the default `SearchSpace`: the survey's trick areas, limited to today's `Recipe`.

    An entry of `DEFAULT_CANDIDATES` is kept when its field exists in the `Recipe`. Its values
    are limited to those the `Recipe` accepts, and it is dropped when fewer than two remain.
    """
    base = base if base is not None else Recipe()
    fields = {field.name for field in dataclasses.fields(type(base))}
    accepted = {}
    for name, spec in DEFAULT_CANDIDATES.items():
        if name.partition(".")[0] not in fields:
            continue
        spec = dict(spec)
        if "values" in spec:
            spec["values"] = [value for value in spec["values"]
                              if _is_accepted(name, value, spec.get("when"), base)]
            if len(spec["values"]) < 2:
                continue
        when = spec.get("when")
        if when:
            (parent, parent_values), = when.items()
            parent_values_kept = accepted.get(parent, {}).get("values", [])
            spec["when"] = {parent: [value for value in parent_values if value in parent_values_kept]}
            if not spec["when"][parent]:
                continue
        accepted[name] = spec
    return SearchSpace(accepted, base=base)


def _is_accepted(name, value, when, base):
    try:
        parent = {} if not when else {key: values[0] for key, values in when.items()}
        probe = Entry(name=name, field=name.partition(".")[0], key=name.partition(".")[2] or None,
                      kind="choice", values=[value])
        check_value(probe, value, base, parent)
    except SearchError:
        return False
    return True
