"""The search space of a trick search: which `Recipe` fields to search, and over which values.

A space is a mapping from a recipe field name to what to try for it, read from YAML or JSON:

```yaml
activation: [relu, leaky_relu, rrelu]          # a list: one of these values
activation_options.negative_slope:             # FIELD.KEY: one key of a dict field
  values: [0.01, 0.1, 0.3]
  when: {activation: leaky_relu}               # only in trials where activation is leaky_relu
learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}   # a range of an int or float field
dropout: {min: 0.0, max: 0.5, step: 0.1}
```

Each entry becomes one keras-tuner hyperparameter of the same name (`Choice`, `Int` or `Float`);
an entry with `when` becomes a conditional hyperparameter of its parent. Every value is checked
against the `Recipe` before any trial starts.
"""

import dataclasses
import json
import typing
from pathlib import Path

import yaml

from kerastricks.recipes.spec import Recipe, RecipeError, syntax_error_summary


class SearchError(RecipeError):
    """A search space, budget, objective or project folder that is invalid."""


# These fields define the data set and the training budget, which stay fixed for a whole search:
# the data is loaded and batched once, and the tuner decides the number of epochs.
FIXED_FIELDS = ("name", "dataset", "subset", "validation_split", "seed", "epochs", "batch_size")

ENTRY_KEYS = ("values", "min", "max", "step", "sampling", "when")
SAMPLINGS = ("linear", "log", "reverse_log")

@dataclasses.dataclass
class Entry:
    """One searched hyperparameter: a recipe field (or one key of a dict field) and its values."""

    name: str
    field: str
    key: typing.Optional[str]
    kind: str  # "choice", "int" or "float"
    values: list = None
    labels: list = None
    min: float = None
    max: float = None
    step: float = None
    sampling: str = "linear"
    parent: typing.Optional[str] = None
    parent_values: list = None

    def declare(self, hp):
        """Declare this entry on keras-tuner's `hp`; return its value, or `None` when inactive."""
        if self.kind == "choice":
            label = hp.Choice(self.name, self.labels, ordered=False)
            return None if label is None else self.values[self.labels.index(label)]
        method = hp.Int if self.kind == "int" else hp.Float
        return method(self.name, self.min, self.max, step=self.step, sampling=self.sampling)

    def value_of(self, hyperparameter_value):
        """Map a value stored by keras-tuner (a choice label) back to the recipe value."""
        if self.kind != "choice":
            return hyperparameter_value
        return self.values[self.labels.index(hyperparameter_value)]

    def to_config(self):
        config = {"field": self.field, "key": self.key, "kind": self.kind}
        if self.kind == "choice":
            config["values"] = self.values
        else:
            config.update(min=self.min, max=self.max, step=self.step, sampling=self.sampling)
        if self.parent:
            config["when"] = {self.parent: self.parent_values}
        return config


class SearchSpace:
    """Searched recipe fields and their values, checked against a base `Recipe`.

    Args:
        entries: a mapping from a field name (or `FIELD.KEY` for one key of a dict field such as
            `activation_options`) to a list of values, or to a mapping with `values` or
            `min`/`max` (plus optional `step`, `sampling` and `when`).
        base: the `Recipe` whose other fields every trial keeps. Defaults to `Recipe()`.

    Raises:
        SearchError: for an unknown or fixed field, an unknown entry key, an empty value list,
            `min > max`, a value the `Recipe` rejects, or a `when` that names no searched choice.
    """

    def __init__(self, entries, base=None):
        self.base = base if base is not None else Recipe()
        if not isinstance(entries, dict) or not entries:
            raise SearchError(
                f"A search space must be a non-empty mapping of recipe fields to values. "
                f"Received: {entries!r}."
            )
        parsed = [_parse_entry(name, spec, self.base) for name, spec in entries.items()]
        self.entries = _order_by_parent(parsed)
        for entry in self.entries:
            _check_values(entry, self)

    @classmethod
    def from_file(cls, path, base=None):
        """Read a space from a `.yaml`, `.yml` or `.json` file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SearchError(f"Search space file not found: {path}.") from None
        try:
            entries = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            raise SearchError(
                f"Search space file {path} is not valid JSON or YAML: {syntax_error_summary(error)}. "
                f"Fix the file and rerun."
            ) from None
        return cls(entries, base=base)

    def entry(self, name):
        return next(entry for entry in self.entries if entry.name == name)

    @property
    def names(self):
        return [entry.name for entry in self.entries]

    def declare(self, hp):
        """Declare every entry on `hp` and return {entry name: value} of the active ones."""
        values = {}
        for entry in self.entries:
            if entry.parent is None:
                value = entry.declare(hp)
            else:
                parent = self.entry(entry.parent)
                with hp.conditional_scope(entry.parent, [parent.labels[parent.values.index(v)]
                                                         for v in entry.parent_values]):
                    value = entry.declare(hp)
            if value is not None:
                values[entry.name] = value
        return values

    def recipe_for(self, values):
        """Return the base recipe with the searched `values` ({entry name: value}) applied.

        A dict field with searched keys starts empty, so an option of the base recipe never
        reaches an activation that does not take it. For the same reason, a searched field `F`
        empties the dict field `F_options` when the space searches none of its keys.
        """
        changes = {}
        for entry in self.entries:
            if entry.key is not None:
                changes.setdefault(entry.field, {})
            elif hasattr(self.base, f"{entry.field}_options"):
                changes.setdefault(f"{entry.field}_options", {})
        for name, value in values.items():
            entry = self.entry(name)
            if entry.key is None:
                changes[entry.field] = value
            else:
                changes[entry.field][entry.key] = value
        return self.base.replace(**changes)

    def to_config(self):
        """Return the space as plain data; equal configs mean the same space."""
        return {entry.name: entry.to_config() for entry in self.entries}

    def check_grid(self):
        """Raise `SearchError` unless grid search can enumerate every entry."""
        for entry in self.entries:
            if entry.kind != "choice" and entry.step is None:
                raise SearchError(
                    f"Grid search needs a list of values or a step for every entry; "
                    f"{entry.name!r} is a range without a step. Add a step or use another tuner."
                )


def _parse_entry(name, spec, base):
    if not isinstance(name, str):
        raise SearchError(f"Search space keys must be recipe field names. Received: {name!r}.")
    field_name, _, key = name.partition(".")
    fields = {field.name: field for field in dataclasses.fields(type(base))}
    if field_name not in fields:
        raise SearchError(
            f"Unknown recipe field {field_name!r} in the search space. "
            f"Expected one of {sorted(set(fields) - set(FIXED_FIELDS))}."
        )
    if field_name in FIXED_FIELDS:
        raise SearchError(
            f"Recipe field {field_name!r} is fixed for a whole search and cannot be searched: "
            f"set it with the command's flags or in the base recipe. Received it in the space."
        )
    annotation = fields[field_name].type
    if key and (typing.get_origin(annotation) or annotation) is not dict:
        raise SearchError(
            f"Search space entry {name!r}: only dict fields take a '.KEY' suffix, and "
            f"{field_name!r} is not a dict field."
        )
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise SearchError(
            f"Search space entry {name!r} must be a list of values or a mapping with 'values' or "
            f"'min' and 'max'. Received: {spec!r}."
        )
    unknown = sorted(set(spec) - set(ENTRY_KEYS))
    if unknown:
        raise SearchError(
            f"Unknown key {unknown[0]!r} in search space entry {name!r}. "
            f"Expected keys among {list(ENTRY_KEYS)}."
        )
    entry = Entry(name=name, field=field_name, key=key or None, kind="choice")
    _parse_when(entry, spec.get("when"))
    if "values" in spec:
        if {"min", "max", "step", "sampling"} & set(spec):
            raise SearchError(
                f"Search space entry {name!r} has both 'values' and a range; give one of them."
            )
        _parse_values(entry, spec["values"], None if key else annotation)
    else:
        _parse_range(entry, spec, None if key else annotation)
    return entry


def _parse_when(entry, when):
    if when is None:
        return
    if not isinstance(when, dict) or len(when) != 1:
        raise SearchError(
            f"Search space entry {entry.name!r}: 'when' must map one searched field to its "
            f"values, e.g. {{activation: [rrelu]}}. Received: when={when!r}."
        )
    (parent, values), = when.items()
    entry.parent = parent
    entry.parent_values = values if isinstance(values, list) else [values]


def _parse_values(entry, values, annotation):
    if not isinstance(values, list) or not values:
        raise SearchError(
            f"Search space entry {entry.name!r} needs a non-empty list of values. "
            f"Received: values={values!r}."
        )
    if _base_type(annotation) is float:
        values = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    duplicates = [v for i, v in enumerate(values) if v in values[:i]]
    if duplicates:
        raise SearchError(
            f"Search space entry {entry.name!r} lists {duplicates[0]!r} more than once. "
            f"Received: values={values!r}."
        )
    entry.values = values
    # keras-tuner's Choice contains one type of str, int or float (it stores booleans as 0 and 1),
    # so booleans, lists, dicts, None and mixed types become their JSON text.
    scalar = all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values)
    if scalar and len({type(v) for v in values}) == 1:
        entry.labels = list(values)
    else:
        entry.labels = [json.dumps(v, sort_keys=True) for v in values]


def _parse_range(entry, spec, annotation):
    if "min" not in spec or "max" not in spec:
        raise SearchError(
            f"Search space entry {entry.name!r} needs 'values', or both 'min' and 'max'. "
            f"Received: {spec!r}."
        )
    low, high, step = spec["min"], spec["max"], spec.get("step")
    for label, number in (("min", low), ("max", high), ("step", step)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
            raise SearchError(
                f"Search space entry {entry.name!r}: {label} must be a number. "
                f"Received: {label}={number!r}."
            )
    if low > high:
        raise SearchError(
            f"Search space entry {entry.name!r} needs min <= max. Received: min={low!r}, max={high!r}."
        )
    if step is not None and step <= 0:
        raise SearchError(f"Search space entry {entry.name!r} needs step > 0. Received: step={step!r}.")
    sampling = spec.get("sampling", "linear")
    if sampling not in SAMPLINGS:
        raise SearchError(
            f"Search space entry {entry.name!r}: unknown sampling. Expected one of {list(SAMPLINGS)}. "
            f"Received: sampling={sampling!r}."
        )
    if sampling != "linear" and low <= 0:
        raise SearchError(
            f"Search space entry {entry.name!r}: {sampling} sampling needs min > 0. Received: min={low!r}."
        )
    kind = _base_type(annotation)
    if kind is None:
        kind = int if all(isinstance(v, int) for v in (low, high, step) if v is not None) else float
    if kind not in (int, float):
        raise SearchError(
            f"Search space entry {entry.name!r}: a min/max range needs an int or float field, and "
            f"{entry.field!r} is {getattr(kind, '__name__', kind)}. Give a list of values instead."
        )
    if kind is int and not all(float(v).is_integer() for v in (low, high, step) if v is not None):
        raise SearchError(
            f"Search space entry {entry.name!r}: field {entry.field!r} is an integer, so min, max "
            f"and step must be integers. Received: {spec!r}."
        )
    entry.kind = kind.__name__
    cast = int if kind is int else float
    entry.min, entry.max = cast(low), cast(high)
    entry.step = None if step is None else cast(step)
    entry.sampling = sampling


def _base_type(annotation):
    if annotation is None:
        return None
    if typing.get_origin(annotation) is typing.Union:
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = options[0] if len(options) == 1 else annotation
    return typing.get_origin(annotation) or annotation


def _order_by_parent(entries):
    """Order entries so each parent comes before its conditional children."""
    by_name = {entry.name: entry for entry in entries}
    for entry in entries:
        if entry.parent is None:
            continue
        parent = by_name.get(entry.parent)
        if parent is None or parent.kind != "choice":
            raise SearchError(
                f"Search space entry {entry.name!r} is conditional on {entry.parent!r}, which "
                f"must be a searched field with a list of values. Searched: {sorted(by_name)}."
            )
        missing = [value for value in entry.parent_values if value not in parent.values]
        if missing:
            raise SearchError(
                f"Search space entry {entry.name!r}: 'when' value {missing[0]!r} is not among the "
                f"values of {entry.parent!r}, {parent.values!r}."
            )
    ordered, placed = [], set()
    while len(ordered) < len(entries):
        ready = [e for e in entries if e.name not in placed and (e.parent is None or e.parent in placed)]
        if not ready:
            raise SearchError(
                f"The 'when' conditions of the search space form a cycle among "
                f"{sorted(set(by_name) - placed)}."
            )
        for entry in ready:
            ordered.append(entry)
            placed.add(entry.name)
    return ordered


def _parent_settings(entry, space):
    """Yield {field: value} settings of the ancestors under which `entry` is active."""
    if entry.parent is None:
        yield {}
        return
    parent = space.entry(entry.parent)
    for settings in _parent_settings(parent, space):
        for value in entry.parent_values:
            yield {**settings, parent.name: value}


def _check_values(entry, space):
    samples = entry.values if entry.kind == "choice" else [entry.min, entry.max]
    settings_list = list(_parent_settings(entry, space))
    owner = entry.field.removesuffix("_options")
    if entry.key is not None and entry.parent is None and owner in space.names:
        # An unconditional option of a searched field (e.g. an activation option) must suit
        # every value of that field.
        settings_list = [{owner: value} for value in space.entry(owner).values]
    for settings in settings_list:
        for value in samples:
            check_value(entry, value, space.base, settings)


def check_value(entry, value, base, settings):
    """Raise `SearchError` unless `base` with `settings` and `entry = value` is a valid recipe."""
    changes = {name: v for name, v in settings.items() if "." not in name}
    for name in changes.keys() | {entry.field}:
        # As in `recipe_for`: a searched field starts with empty `_options`.
        if entry.key is None and hasattr(base, f"{name}_options"):
            changes[f"{name}_options"] = {}
    if entry.key is None:
        changes[entry.field] = value
    else:
        options = {name.partition(".")[2]: v for name, v in settings.items()
                   if name.partition(".")[0] == entry.field}
        changes[entry.field] = {**options, entry.key: value}
    try:
        recipe = base.replace(**changes)
        if entry.field == "activation_options":
            _check_activation_options(recipe)
    except (RecipeError, TypeError, ValueError) as error:
        where = f" when {settings}" if settings else ""
        raise SearchError(
            f"Search space entry {entry.name!r}: value {value!r}{where} is not a valid recipe "
            f"value: {error}"
        ) from None


def _check_activation_options(recipe):
    # The Recipe stores options as a free mapping; the activation factory checks them.
    from kerastricks.layers import get_activation

    get_activation(recipe.activation, **recipe.activation_options)
