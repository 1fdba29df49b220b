"""Run recipes under `tf.distribute`: strategy creation, batch and learning-rate scaling.

`--distribute` picks one of two strategies:

- `none`: TensorFlow's default strategy (one device), as without the flag.
- `mirrored`: `tf.distribute.MirroredStrategy` over the GPUs of this host. On a host without
  GPUs it splits the CPU into `CPU_REPLICAS` logical devices, so the distributed code path runs
  (and can be tested) anywhere. Those replicas share the same cores, so expect no speed-up.

The recipe's `batch_size` is the global batch by default, and Keras splits every batch across
the replicas. Batch normalization is synchronized across them, so a mirrored run follows the
same loss curve as a single-device one (see `scale_for_replicas` for the other rules). Random
layers (RReLU, dropout) draw different numbers on each replica (see
`make_seeds_replica_distinct`).

NOTE: there is no multi-host strategy. Keras 3.15's `Model.fit` fails under
`tf.distribute.MultiWorkerMirroredStrategy` (it reduces the first batch and every step's scalar
logs with `strategy.reduce(..., axis=0)`, which that strategy rejects), and the TensorFlow
backend of Keras's `keras.distribution` API is an unfinished prototype in that version.
"""

import argparse
import logging
import math
import os
import types
import warnings

# TensorFlow and Keras are imported inside the functions that use them, so the command-line
# parser can offer these choices without importing TensorFlow.
STRATEGIES = ("none", "mirrored")
BATCH_SCALING = ("global", "linear", "sqrt")

# Logical CPU devices that `mirrored` creates on a host without GPUs.
CPU_REPLICAS = 2

# Replica `i` adds `i` times this to the first word of each seed, so replicas draw different
# numbers. It is far larger than the seed offsets between a recipe's layers, so a replica's seed
# does not coincide with another layer's seed.
_REPLICA_SEED_STRIDE = 1_000_003

logger = logging.getLogger(__name__)

# The process's mirrored strategy, created on the first request (see `create_strategy`).
_mirrored_strategy = None


class DistributeError(ValueError):
    """An unknown strategy name or batch scaling rule."""


def add_distribute_arguments(parser, batch_scaling=True):
    """Add `--distribute`, and `--batch-scaling` unless `batch_scaling` is false, to `parser`."""
    parser.add_argument("--distribute", default="none", choices=STRATEGIES,
                        help="train under a tf.distribute strategy: mirrored splits each batch "
                             "across this host's GPUs (or 2 logical CPU devices on a host without "
                             "a GPU) (default: %(default)s)")
    if not batch_scaling:
        return
    parser.add_argument("--batch-scaling", default="global", choices=BATCH_SCALING,
                        help="global: the recipe's batch size is split across the replicas; "
                             "linear or sqrt: it is each replica's batch, and the learning rate "
                             "is multiplied by the replica count or its square root "
                             "(default: %(default)s)")


def split_cpu(count=CPU_REPLICAS):
    """Split the host's CPU into `count` logical devices; return whether it took effect.

    TensorFlow allows this only before it initializes its devices, which happens at the first
    operation. Afterwards the devices stay as they are, and this returns `False` unless they are
    already split into `count`.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return True
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        return len(tf.config.list_logical_devices("CPU")) == count
    return True


def create_strategy(name="none"):
    """Create the `tf.distribute.Strategy` named by `--distribute`.

    Call it at the start of the program: `mirrored` on a host without GPUs must split the CPU
    before TensorFlow initializes its devices. If they are already initialized, the strategy
    mirrors over the logical CPU devices that exist, with a warning. Later calls for `mirrored`
    return the same strategy. With a second mirrored strategy in the same process, the
    synchronized batch normalization of a new model failed with a collective shape mismatch
    (TensorFlow 2.21).

    Args:
        name: `none` or `mirrored`. Defaults to `"none"`.

    Returns:
        The strategy. Its `num_replicas_in_sync` is the number of replicas a batch is split into.

    Raises:
        DistributeError: for an unknown name.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise DistributeError(
            f"Unknown distribution strategy. Expected one of {list(STRATEGIES)}. "
            f"Received: distribute={name!r}."
        )
    if name == "none":
        return tf.distribute.get_strategy()
    global _mirrored_strategy
    if _mirrored_strategy is None:
        _mirrored_strategy = _create_mirrored_strategy()
    return _mirrored_strategy


def _create_mirrored_strategy():
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        split = split_cpu(CPU_REPLICAS)
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        if split:
            logger.info("No GPU found: mirroring over %d logical CPU devices.", len(devices))
        else:
            logger.warning("No GPU found, and TensorFlow's devices were initialized before the "
                           "CPU could be split, so the mirrored strategy uses the %d logical CPU "
                           "device(s) that exist. Create the strategy before other TensorFlow "
                           "work.", len(devices))
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MirroredStrategy()


def scale_for_replicas(recipe, replicas, rule="global"):
    """Return the recipe with the batch size and learning rate for `replicas` replicas.

    Rules:

    - `global`: `batch_size` is the global batch, split evenly across the replicas, and the
      learning rate is unchanged. The run takes the same steps as on one device.
    - `linear`: `batch_size` is each replica's batch, so the global batch is
      `batch_size * replicas`, and the learning rate is multiplied by `replicas` (the linear
      scaling rule of Goyal et al., 2017, stated for SGD with momentum).
    - `sqrt`: the same global batch as `linear`, with the learning rate multiplied by
      `sqrt(replicas)` (the square-root rule, often preferred for Adam and RMSprop).

    Args:
        recipe: a `Recipe`.
        replicas: the number of replicas, `strategy.num_replicas_in_sync`.
        rule: `global`, `linear` or `sqrt`. Defaults to `"global"`.

    Returns:
        A `Recipe`; the same one for `global` or a single replica.

    Raises:
        DistributeError: for an unknown rule or a replica count below 1.

    Reference:
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """
    if rule not in BATCH_SCALING:
        raise DistributeError(
            f"Unknown batch scaling rule. Expected one of {list(BATCH_SCALING)}. "
            f"Received: batch_scaling={rule!r}."
        )
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise DistributeError(f"replicas must be an integer >= 1. Received: replicas={replicas!r}.")
    if rule == "global" or replicas == 1:
        return recipe
    factor = replicas if rule == "linear" else math.sqrt(replicas)
    return recipe.replace(batch_size=recipe.batch_size * replicas,
                          learning_rate=recipe.learning_rate * factor)


def configure_replicas(model):
    """Prepare `model`'s layers for the current strategy's replicas; return `model`.

    Under a strategy with more than one replica, batch normalization is synchronized (each
    replica normalizes with the mean and variance of the global batch, as one device would),
    and the random layers draw different numbers on each replica. Under a single replica the
    model is left as it is.
    """
    import keras
    import tensorflow as tf

    if tf.distribute.get_strategy().num_replicas_in_sync == 1:
        return model
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras reads it when `call` is traced, so setting it on a built layer takes effect.
            # The saved config records it, and without a strategy it changes nothing.
            layer.synchronized = True
    make_seeds_replica_distinct(model)
    return model


def recipe_for_strategy(recipe, strategy):
    """Return `recipe` without the options that cannot run under `strategy`, with a warning.

    Args:
        recipe: a `Recipe`.
        strategy: a `tf.distribute.Strategy`.
    """
    if recipe.diagnostics and strategy.num_replicas_in_sync > 1:
        # TODO: UpdateHealth takes gradients with a GradientTape outside the replicas, which
        # mirrored variables reject, so distributed runs train without the diagnostics for now.
        warnings.warn(
            f"The diagnostics do not run under a strategy with several replicas yet, so this "
            f"run trains without them (recipe field diagnostics=False). Received: "
            f"{strategy.num_replicas_in_sync} replicas.", stacklevel=2,
        )
        return recipe.replace(diagnostics=False)
    return recipe


def make_seeds_replica_distinct(model):
    """Make the random layers of `model` draw different numbers on each replica.

    Keras layers draw from a `keras.random.SeedGenerator` whose state is mirrored, so without
    this every replica of a `tf.distribute` strategy would use the same RReLU slopes and dropout
    masks. Inside a replica of a strategy with more than one replica, each seed generator found
    on the model's layers adds the replica's index (times a large odd number) to its seeds.
    Replica 0 and single-device runs keep their seeds unchanged.

    Args:
        model: a built `keras.Model`.

    Returns:
        The number of seed generators changed.
    """
    import keras

    changed = 0
    for layer in _all_layers(model):
        for value in list(vars(layer).values()):
            if isinstance(value, keras.random.SeedGenerator) and not _is_replica_distinct(value):
                _offset_by_replica(value)
                changed += 1
    return changed


def _all_layers(model):
    pending, seen = [model], set()
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        pending.extend(getattr(layer, "layers", []) or [])


def _is_replica_distinct(generator):
    return getattr(generator, "_kerastricks_replica_distinct", False)


def _offset_by_replica(generator):
    import tensorflow as tf

    draw = generator.next

    def next_seed(self, ordered=True):
        seed = draw(ordered)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return seed
        replica = tf.cast(context.replica_id_in_sync_group, seed.dtype)
        offset = tf.stack([replica * _REPLICA_SEED_STRIDE, tf.zeros_like(replica)])
        return seed + offset

    # An instance attribute, so the layer's class, config and saved file stay unchanged.
    generator.next = types.MethodType(next_seed, generator)
    generator._kerastricks_replica_distinct = True


# keras-tuner's distributed mode reads these variables; the `search` flags set them.
SEARCH_VARIABLES = {
    "tuner_id": "KERASTUNER_TUNER_ID",
    "oracle_ip": "KERASTUNER_ORACLE_IP",
    "oracle_port": "KERASTUNER_ORACLE_PORT",
}


def add_search_cluster_arguments(parser):
    """Add the flags of keras-tuner's distributed mode (a chief oracle and workers) to `parser`."""
    parser.add_argument("--tuner-id", metavar="ID",
                        help="this process's role in a distributed search: 'chief' runs the "
                             "oracle, any other id (tuner0, tuner1, ...) runs trials; sets "
                             "KERASTUNER_TUNER_ID")
    parser.add_argument("--oracle-ip", metavar="ADDRESS",
                        help="the chief's address in a distributed search, where the chief "
                             "listens; sets KERASTUNER_ORACLE_IP")
    parser.add_argument("--oracle-port", type=_port, metavar="PORT",
                        help="the chief's port in a distributed search; sets "
                             "KERASTUNER_ORACLE_PORT")


def apply_search_cluster_arguments(args, parser, environ=None):
    """Set keras-tuner's variables from the flags; return this process's role, or `None`.

    The flags override variables already in the environment. Either none of the three
    variables is set (a search in one process) or all three are.

    Returns:
        `None` for a search in one process, `"chief"` for the oracle, or the worker's tuner id.
    """
    environ = os.environ if environ is None else environ
    for attribute, variable in SEARCH_VARIABLES.items():
        value = getattr(args, attribute, None)
        if value is not None:
            environ[variable] = str(value)
    present = [variable for variable in SEARCH_VARIABLES.values() if environ.get(variable)]
    if not present:
        return None
    missing = [variable for variable in SEARCH_VARIABLES.values() if not environ.get(variable)]
    if missing:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name, variable in
                          SEARCH_VARIABLES.items() if variable in missing)
        parser.error(f"a distributed search needs {', '.join(SEARCH_VARIABLES.values())}; "
                     f"{', '.join(missing)} is not set. Pass {flags} as well")
    tuner_id = environ["KERASTUNER_TUNER_ID"]
    # keras-tuner treats any id that contains "chief" as the chief.
    return "chief" if "chief" in tuner_id else tuner_id


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, received {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, received {text!r}")
    return value
