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
HEADS = ("flatten", "average")


@dataclasses.dataclass
class Recipe:
    """A model and its training tricks.

    Args:
        name: the recipe's name, used in run folder names.
        dataset: the data set, see `kerastricks.recipes.available_datasets()`.
        subset: use at most this many training images (stratified), for quick runs. `None` uses all.
        validation_split: the fraction of the training images held out for validation.
        seed: the seed of the data split, the initial weights and shuffling.
        augmentation: the augmentations applied to training batches in the `tf.data`
            pipeline, in order, each a name or a mapping of a name to its options, e.g.
            `["flip", {"pad_crop": {"padding": 2}}]`. See
            `kerastricks.recipes.augmentation.available_augmentations()`. `color_jitter`,
            `keras_color_jitter` and `fancy_pca` need RGB images.
        preprocessing: the pre-processing layer at the front of the model, adapted on the
            training split. One of `none`; `center` (subtract the per-pixel mean);
            `standardize_pixel` or `standardize_channel` (zero mean and unit variance per
            pixel or per channel); `minmax` (each pixel to [-1, 1]); `pca` or `zca`
            (whitening, see `kerastricks.layers.Whitening`).
        preprocessing_options: keyword options of the pre-processing: `epsilon` for `pca`
            and `zca` (0.1 unless set, because images in [0, 1] have directions of tiny
            variance that whitening would blow up).
        width: the number of filters of the first convolution block; each block doubles it.
        depth: the number of convolution blocks.
        convs_per_block: the number of 3x3 convolutions in each block.
        head: how the last feature maps reach the classifier: `flatten` (keeps where features
            are, better on small centred images such as Fashion-MNIST) or `average` (global
            average pooling, fewer parameters).
        dense_units: the width of the hidden dense layer; 0 leaves it out.
        batch_norm: whether each convolution is followed by batch normalization.
        activation: the activation name, see `kerastricks.layers.available_activations()`.
        activation_options: keyword options of the activation, e.g. `{"negative_slope": 0.1}`.
        initializer: the kernel initializer name, see
            `kerastricks.layers.available_initializers()`. `he_leaky_normal` and
            `he_leaky_uniform` take the negative slope from the activation, see
            `kerastricks.layers.he_negative_slope()`.
        lsuv: whether to rescale the kernels with LSUV (`kerastricks.layers.apply_lsuv`) on
            the first training batch before training.
        optimizer: one of `adam`, `adamw`, `sgd` (with Nesterov momentum), `rmsprop`.
        learning_rate: the optimizer's learning rate.
        momentum: the momentum of `sgd` and `rmsprop`.
        clipnorm: clip each gradient to this L2 norm (Keras's `clipnorm`); `None` disables it.
        epochs: the number of training epochs.
        batch_size: the number of images in each training batch.
        dropout: the dropout rate before the classifier; 0 disables it.
        l2: the L2 penalty factor on convolution and dense kernels (Keras's convention,
            `l2 * sum(w**2)`); 0 disables it.
        l1: the L1 penalty factor on convolution and dense kernels (`l1 * sum(|w|)`); 0
            disables it. Like `l2`, it never applies to biases, batch-normalization parameters
            or PReLU slopes.
        max_norm: the bound on the L2 norm of each filter's incoming weights (Keras's
            `MaxNorm`, over axes (0, 1, 2) of a convolution kernel and axis 0 of a dense
            kernel), applied after every update; the survey suggests 3 to 4. 0 disables it.
        spatial_dropout: the rate of `SpatialDropout2D` (whole feature maps dropped) at the
            end of each convolution block; 0 disables it.
        ema: whether the optimizer keeps an exponential moving average of the weights
            (`use_ema`); validation uses the average through `SwapEMAWeights`, and the final
            model gets the averaged weights with recomputed batch-normalization statistics.
        ema_momentum: the momentum of that moving average.
        snapshots: the number of cosine cycles M of a snapshot ensemble, each ending with a
            snapshot in `RUN/snapshots/`; it must divide `epochs`, and the cycles start at
            `learning_rate`. 0 disables it.
        swa_start: average the weights of the epochs after this many epochs (stochastic
            weight averaging, then a batch-normalization pass over the training images);
            `None` disables it, and it must be smaller than `epochs`.
        keep_checkpoints: keep the model of each of the last this many epochs in
            `RUN/checkpoints/`, for a checkpoint ensemble; at most `epochs`, 0 disables it.
        diagnostics: whether to log the diagnostics (dead units, saturation, update ratios,
            gradient norms, training figures and a text diagnosis, see
            `kerastricks.callbacks.diagnostics_callbacks`) into the run folder.
        diagnostics_every: measure the activation and update diagnostics every this many
            epochs.
        lr_schedule: the learning-rate schedule: `constant`, `step` (times 0.1 every few
            epochs), `plateau` (Keras's `ReduceLROnPlateau`, divide by 10 when the validation
            loss stops improving), `cosine` (with an optional linear warmup), `sgdr` (cosine
            with warm restarts) or `one_cycle` (`learning_rate` is the peak); see
            `kerastricks.callbacks.learning_rate_schedule`. Only `constant` combines with
            `snapshots`, which sets the learning rate itself.
        lr_schedule_options: the schedule's options, counted in epochs, e.g.
            `{"warmup_epochs": 1}`; see `kerastricks.callbacks.SCHEDULE_OPTIONS`.
        class_weight: loss weights per class passed to `fit`: `balanced` (`n / (k * n_c)`),
            `effective_number` (Cui et al., 2019), or a mapping of class names or indices to
            weights (other classes get 1); `None` disables them.
        class_weight_beta: the beta of the `effective_number` class weights, in [0, 1).
        sampling: sample the training batches by class: `balanced` (every class equally
            often), or a mapping of class names or indices to probabilities that sum to 1;
            `None` keeps the plain shuffled order. An epoch keeps its number of batches.
        imbalance: make the training and validation splits imbalanced by keeping only this
            fraction of the images of each named class, e.g. `{0: 0.05, 2: 0.05}` keeps 1 in
            20 images of classes 0 and 2; the test split stays whole. Empty disables it.
        minority_threshold: a class is a minority class when it has fewer than this fraction
            of the largest class's training images; used by `minority_crops` and
            `two_stage_epochs`.
        minority_crops: add this many random crops of each minority-class training image to
            the training split; 0 disables it.
        minority_crop_size: the side of those crops as a fraction of the image side; the crops
            are resized back to the full size.
        two_stage_epochs: two-stage training: the first `epochs - two_stage_epochs` epochs
            train only on the classes with many images, the last `two_stage_epochs` only on
            the minority classes. 0 disables it.
        two_stage_replay: the share of each stage-two batch drawn from the classes with many
            images (at their stage-one shares), in [0, 1), so that stage two does not forget
            them; `0.5` draws as many of their images as of the minority classes. 0 keeps stage
            two on the minority classes only.
        finetune_from: the pre-trained model to fine-tune instead of building a new one, as
            the path of a `.keras` file or of a run folder that contains `model.keras`. The
            architecture fields (`width` to `initializer`, `preprocessing`, `lsuv`) do not
            apply; the base model keeps its own layers. `None` trains a new model. See
            `kerastricks.recipes.finetune.build_finetune_model`.
        finetune_strategy: `auto`, `similar_small`, `similar_large`, `different_small` or
            `different_large`; `different_large` trains at `learning_rate` times 0.1.
        finetune_similar: for `auto`, whether the new images resemble the pre-training ones.
        finetune_feature_layer: the base model layer whose output feeds the new classifier;
            `None` picks one by the strategy.
        finetune_trainable_groups: for `similar_large`, the number of layer groups that
            train, counted from the top.
        finetune_batch_norm: whether the `BatchNormalization` layers of the groups that train
            (or that gradual unfreezing opens) also train and update their statistics.
        gradual_unfreezing: unfreeze one frozen layer group of the base model, from the top,
            every this many epochs (`kerastricks.callbacks.GradualUnfreezing`); 0 disables it.
        discriminative_lr: the factor between the learning rates of two neighbouring layer
            groups, in (0, 1]: the top group trains at `learning_rate`, the group below at
            `learning_rate * discriminative_lr`, and so on. `None` disables it.
        evaluate_train: whether to evaluate the final model on the whole training split too
            (in inference mode, without augmentation), adding `train_accuracy` and
            `train_loss` to the metrics, for the train/test gap. It costs one more pass over
            the training images.
    """

    name: str = "baseline"
    dataset: str = "digits"
    subset: typing.Optional[int] = None
    validation_split: float = 0.1
    seed: int = 0
    augmentation: list = dataclasses.field(default_factory=list)
    preprocessing: str = "none"
    preprocessing_options: dict = dataclasses.field(default_factory=dict)
    width: int = 32
    depth: int = 2
    convs_per_block: int = 2
    head: str = "flatten"
    dense_units: int = 128
    batch_norm: bool = True
    activation: str = "relu"
    activation_options: dict = dataclasses.field(default_factory=dict)
    initializer: str = "he_normal"
    lsuv: bool = False
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    clipnorm: typing.Optional[float] = None
    epochs: int = 10
    batch_size: int = 64
    dropout: float = 0.0
    l2: float = 0.0
    l1: float = 0.0
    max_norm: float = 0.0
    spatial_dropout: float = 0.0
    ema: bool = False
    ema_momentum: float = 0.99
    snapshots: int = 0
    swa_start: typing.Optional[int] = None
    keep_checkpoints: int = 0
    diagnostics: bool = True
    diagnostics_every: int = 1
    lr_schedule: str = "constant"
    lr_schedule_options: dict = dataclasses.field(default_factory=dict)
    class_weight: typing.Union[str, dict, None] = None
    class_weight_beta: float = 0.999
    sampling: typing.Union[str, dict, None] = None
    imbalance: dict = dataclasses.field(default_factory=dict)
    minority_threshold: float = 0.5
    minority_crops: int = 0
    minority_crop_size: float = 0.8
    two_stage_epochs: int = 0
    two_stage_replay: float = 0.0
    finetune_from: typing.Optional[str] = None
    finetune_strategy: str = "auto"
    finetune_similar: bool = True
    finetune_feature_layer: typing.Optional[str] = None
    finetune_trainable_groups: int = 1
    finetune_batch_norm: bool = False
    gradual_unfreezing: int = 0
    discriminative_lr: typing.Optional[float] = None
    evaluate_train: bool = False

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
            raise RecipeError(
                f"Recipe file {path} is not valid JSON or YAML: {syntax_error_summary(error)}. "
                f"Fix the file and rerun."
            ) from None
        if values is None:
            raise RecipeError(f"Recipe file {path} is empty. Write recipe fields such as 'epochs: 5'.")
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

    def with_overrides(self, assignments, changes=None):
        """Return a copy with `key=value` strings applied, as given to `--set`.

        Each value is parsed as a YAML scalar or flow collection (`0.1`, `true`, `[flip, crop]`,
        `{negative_slope: 0.2}`), then checked against the field's type. `changes`, a mapping
        of field values, is applied together with the assignments, and the recipe is validated
        once with all of them.
        """
        changes = dict(changes or {})
        types = {field.name: field.type for field in dataclasses.fields(self)}
        known = set(types)
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
            changes[key] = _parse_override(text, types[key])
        return self.replace(**changes)


def _parse_override(text, expected):
    """Parse a `--set` value as YAML, reading numbers such as `1e-3` that YAML 1.1 leaves as text."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and "str" not in _type_name(expected):
        for number_type in (int, float):
            try:
                return number_type(value)
            except ValueError:
                continue
    return value


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
    "clipnorm": (0.0, None, False),
    "epochs": (1, None, True),
    "batch_size": (1, None, True),
    "dropout": (0.0, 1.0, True),
    "l2": (0.0, None, True),
    "l1": (0.0, None, True),
    "max_norm": (0.0, None, True),
    "spatial_dropout": (0.0, 1.0, True),
    "ema_momentum": (0.0, 1.0, True),
    "snapshots": (0, None, True),
    "swa_start": (0, None, True),
    "keep_checkpoints": (0, None, True),
    "diagnostics_every": (1, None, True),
    "class_weight_beta": (0.0, 1.0, True),
    "minority_threshold": (0.0, 1.0, False),
    "minority_crops": (0, None, True),
    "minority_crop_size": (0.0, 1.0, False),
    "two_stage_epochs": (0, None, True),
    "two_stage_replay": (0.0, 1.0, True),
    "finetune_trainable_groups": (1, None, True),
    "gradual_unfreezing": (0, None, True),
    "discriminative_lr": (0.0, 1.0, False),
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
    _check_averaging(recipe)
    _check_schedule_and_imbalance(recipe)
    _check_finetune(recipe)
    from kerastricks.recipes.augmentation import check_augmentation, check_preprocessing

    check_augmentation(recipe.augmentation, recipe.dataset)
    check_preprocessing(recipe.preprocessing, recipe.preprocessing_options)
    from kerastricks.layers import available_activations, available_initializers, get_activation

    if recipe.activation not in available_activations():
        raise RecipeError(
            f"Unknown activation. Expected one of {available_activations()}. "
            f"Received: activation={recipe.activation!r}."
        )
    # Building the layer once checks option names, types and ranges with the layer's own rules.
    try:
        get_activation(recipe.activation, **recipe.activation_options)
    except (TypeError, ValueError) as error:
        raise RecipeError(
            f"Invalid activation_options for activation {recipe.activation!r}: {error}"
        ) from None
    if recipe.initializer not in available_initializers():
        raise RecipeError(
            f"Unknown initializer. Expected one of {available_initializers()}. "
            f"Received: initializer={recipe.initializer!r}."
        )
    if recipe.head not in HEADS:
        raise RecipeError(
            f"Unknown head. Expected one of {list(HEADS)}. Received: head={recipe.head!r}."
        )
    if recipe.optimizer not in OPTIMIZERS:
        raise RecipeError(
            f"Unknown optimizer. Expected one of {list(OPTIMIZERS)}. "
            f"Received: optimizer={recipe.optimizer!r}."
        )


def _check_averaging(recipe):
    """Check the regularization and ensemble fields that depend on each other or on `epochs`."""
    if recipe.spatial_dropout >= 1.0:
        raise RecipeError(
            f"Recipe field 'spatial_dropout' must be < 1. Received: {recipe.spatial_dropout!r}."
        )
    if recipe.snapshots and recipe.epochs % recipe.snapshots:
        fewer = max(c for c in range(1, recipe.snapshots + 1) if recipe.epochs % c == 0)
        raise RecipeError(
            f"Recipe field 'snapshots' must divide 'epochs', so that every cosine cycle ends at "
            f"an epoch boundary. Received: snapshots={recipe.snapshots}, epochs={recipe.epochs}. "
            f"Use snapshots={fewer} or epochs={recipe.epochs + (-recipe.epochs) % recipe.snapshots}."
        )
    if recipe.ema and recipe.swa_start is not None:
        raise RecipeError(
            "Recipe fields 'ema' and 'swa_start' both replace the final weights with an average; "
            f"use one of them. Received: ema=True, swa_start={recipe.swa_start}."
        )
    if recipe.swa_start is not None and recipe.swa_start >= recipe.epochs:
        raise RecipeError(
            f"Recipe field 'swa_start' must be smaller than 'epochs', or no epoch is averaged. "
            f"Received: swa_start={recipe.swa_start}, epochs={recipe.epochs}."
        )
    if recipe.keep_checkpoints > recipe.epochs:
        raise RecipeError(
            f"Recipe field 'keep_checkpoints' must be at most 'epochs', because one checkpoint "
            f"is written per epoch. Received: keep_checkpoints={recipe.keep_checkpoints}, "
            f"epochs={recipe.epochs}."
        )


def _check_finetune(recipe):
    """Check the fine-tuning fields, against each other and the fields they exclude."""
    from kerastricks.recipes.finetune import check_finetune_fields

    try:
        check_finetune_fields(recipe)
    except ValueError as error:
        raise RecipeError(str(error)) from None


def _check_schedule_and_imbalance(recipe):
    """Check the learning-rate schedule and the class-imbalance fields."""
    from kerastricks.callbacks import check_schedule
    from kerastricks.recipes.imbalance import check_imbalance_fields

    # JSON object keys are strings, so class keys are stored as strings and a recipe equals
    # its saved copy. At training, a digit string that is not a class name is a class index.
    for name in ("class_weight", "sampling", "imbalance"):
        value = getattr(recipe, name)
        if isinstance(value, dict):
            setattr(recipe, name, {str(key): item for key, item in value.items()})

    try:
        check_schedule(recipe.lr_schedule, recipe.lr_schedule_options)
        check_imbalance_fields(recipe)
    except (TypeError, ValueError) as error:
        raise RecipeError(str(error)) from None
    if recipe.snapshots and recipe.lr_schedule != "constant":
        raise RecipeError(
            f"Recipe field 'snapshots' sets the learning rate itself, so it needs "
            f"lr_schedule='constant'. Received: snapshots={recipe.snapshots}, "
            f"lr_schedule={recipe.lr_schedule!r}."
        )


def syntax_error_summary(error):
    """Return a one-line description of a JSON or YAML syntax error, with its line and column."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno}, column {error.colno}"
    # PyYAML's marked errors print a snippet with a caret over several lines, and count from 0.
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())
