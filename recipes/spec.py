"""The `Recipe`: a training run's model and tricks as plain data.

A recipe is read from and written to JSON or YAML (parsed with `yaml.safe_load`, so a file can
never construct Python objects), and every field is checked against its declared type and range.
"""

import dataclasses
import json
import typing
from pathlib import Path

import yaml


class RecipeError(ValueError):
    """A recipe field, file or override that is invalid."""


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclasses.dataclass
class Recipe:
    """A model and its training tricks.

    Args:
        name: the recipe's name, used in run folder names.
        dataset: the data set, see `kerastricks.recipes.available_datasets()`.
        subset: use at most this many training images (stratified), for quick runs. `None` uses all.
        validation_split: the fraction of the training images held out for validation.
        seed: the seed of the data split, the initial weights and shuffling.
        width: the number of filters of the first convolution block; each block doubles it.
        depth: the number of convolution blocks.
        convs_per_block: the number of 3x3 convolutions in each block.
        dense_units: the width of the hidden dense layer; 0 leaves it out.
        batch_norm: whether each convolution is followed by batch normalization.
        activation: the activation name, see `kerastricks.layers.available_activations()`.
        activation_options: keyword options of the activation, e.g. `{"negative_slope": 0.1}`.
        initializer: the kernel initializer name, see
            `kerastricks.layers.available_initializers()`.
        optimizer: one of `adam`, `adamw`, `sgd` (with Nesterov momentum), `rmsprop`.
        learning_rate: the optimizer's learning rate.
        momentum: the momentum of `sgd` and `rmsprop`.
        epochs: the number of training epochs.
        batch_size: the number of images in each training batch.
        dropout: the dropout rate before the classifier; 0 disables it.
        l2: the L2 penalty factor on convolution and dense kernels (Keras's convention,
            `l2 * sum(w**2)`); 0 disables it.
    """

    name: str = "baseline"
    dataset: str = "digits"
    subset: typing.Optional[int] = None
    validation_split: float = 0.1
    seed: int = 0
    width: int = 32
    depth: int = 2
    convs_per_block: int = 2
    dense_units: int = 128
    batch_norm: bool = True
    activation: str = "relu"
    activation_options: dict = dataclasses.field(default_factory=dict)
    initializer: str = "he_normal"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    epochs: int = 10
    batch_size: int = 64
    dropout: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), field.type)
        _check_ranges(self)

    @classmethod
    def from_dict(cls, values):
        """Create a recipe from a mapping, rejecting unknown fields by name."""
        if not isinstance(values, dict):
            raise RecipeError(
                f"A recipe must be a mapping of field names to values. "
                f"Received: {type(values).__name__}."
            )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RecipeError(
                f"Unknown recipe field {unknown[0]!r}. Expected one of {sorted(known)}."
            )
        return cls(**values)

    @classmethod
    def from_file(cls, path):
        """Read a recipe from a `.json`, `.yaml` or `.yml` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(f"Recipe file not found: {path}.") from None
        try:
            if path.suffix == ".json":
                values = json.loads(text)
            else:
                values = yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise RecipeError(f"Recipe file {path} is not valid JSON or YAML: {error}") from None
        return cls.from_dict(values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    def save(self, path):
        """Write the recipe as JSON or YAML, chosen by the file extension."""
        path = Path(path)
        text = self.to_json() if path.suffix == ".json" else self.to_yaml()
        path.write_text(text + "\n", encoding="utf-8")

    def replace(self, **changes):
        """Return a copy with some fields changed, validated like a new recipe."""
        return self.from_dict({**self.to_dict(), **changes})

    def with_overrides(self, assignments):
        """Return a copy with `key=value` strings applied, as given to `--set`.

        Each value is parsed as a YAML scalar or flow collection (`0.1`, `true`, `[flip, crop]`,
        `{negative_slope: 0.2}`), then checked against the field's type.
        """
        changes = {}
        known = {field.name for field in dataclasses.fields(self)}
        for assignment in assignments:
            key, separator, text = assignment.partition("=")
            key = key.strip()
            if not separator or not key:
                raise RecipeError(
                    f"An override must have the form key=value. Received: {assignment!r}."
                )
            if key not in known:
                raise RecipeError(
                    f"Unknown recipe field {key!r} in --set. Expected one of {sorted(known)}."
                )
            try:
                changes[key] = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError:
                changes[key] = text
        return self.replace(**changes)


def _type_name(expected):
    if typing.get_origin(expected) is typing.Union:
        names = [_type_name(arg) for arg in typing.get_args(expected) if arg is not type(None)]
        return " or ".join(names) + " or null"
    origin = typing.get_origin(expected)
    return (origin or expected).__name__


def _check_type(name, value, expected):
    """Raise `RecipeError` unless `value` fits the field's annotation (an int fits a float)."""
    if typing.get_origin(expected) is typing.Union:
        options = typing.get_args(expected)
        if value is None and type(None) in options:
            return
        for option in options:
            if option is not type(None) and _fits(value, option):
                return
    elif _fits(value, expected):
        return
    raise RecipeError(
        f"Recipe field {name!r} must be {_type_name(expected)}. "
        f"Received: {value!r} ({type(value).__name__})."
    )


def _fits(value, expected):
    origin = typing.get_origin(expected) or expected
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin)


# Lower and upper bounds of numeric fields: (minimum, maximum, whether the minimum is allowed).
_RANGES = {
    "subset": (1, None, True),
    "validation_split": (0.0, 0.9, False),
    "width": (1, None, True),
    "depth": (1, None, True),
    "convs_per_block": (1, None, True),
    "dense_units": (0, None, True),
    "learning_rate": (0.0, None, False),
    "momentum": (0.0, 1.0, True),
    "epochs": (1, None, True),
    "batch_size": (1, None, True),
    "dropout": (0.0, 1.0, True),
    "l2": (0.0, None, True),
}


def _check_ranges(recipe):
    for name, (low, high, low_allowed) in _RANGES.items():
        value = getattr(recipe, name, None)
        if value is None:
            continue
        too_low = value < low if low_allowed else value <= low
        too_high = high is not None and value > high
        if too_low or too_high:
            bound = f">= {low}" if low_allowed else f"> {low}"
            rule = bound if high is None else f"{bound} and <= {high}"
            raise RecipeError(f"Recipe field {name!r} must be {rule}. Received: {value!r}.")
    if recipe.dropout >= 1.0:
        raise RecipeError(f"Recipe field 'dropout' must be < 1. Received: {recipe.dropout!r}.")
    from kerastricks.layers import available_activations, available_initializers

    if recipe.activation not in available_activations():
        raise RecipeError(
            f"Unknown activation. Expected one of {available_activations()}. "
            f"Received: activation={recipe.activation!r}."
        )
    if recipe.initializer not in available_initializers():
        raise RecipeError(
            f"Unknown initializer. Expected one of {available_initializers()}. "
            f"Received: initializer={recipe.initializer!r}."
        )
    if recipe.optimizer not in OPTIMIZERS:
        raise RecipeError(
            f"Unknown optimizer. Expected one of {list(OPTIMIZERS)}. "
            f"Received: optimizer={recipe.optimizer!r}."
        )
