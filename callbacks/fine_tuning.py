"""Gradual unfreezing: unfreeze a pre-trained model's layer groups from the top, on a schedule."""

import keras


def layer_group_names(model):
    """Return the names of the layers with weights, grouped by the part before the first `_`.

    Groups come in the order of the model's layers, from the input to the output;
    `kerastricks.recipes.finetune.layer_groups` uses the same rule.
    """
    groups = []
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = layer.name.split("_", 1)[0]
        if groups and groups[-1][0] == prefix:
            groups[-1][1].append(layer.name)
        else:
            groups.append((prefix, [layer.name]))
    return [names for _, names in groups]


@keras.saving.register_keras_serializable(package="kerastricks")
class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreeze the frozen layer groups of a model one at a time, from the top.

    At the start of `fit` the callback lists the layer groups that are frozen (every layer with
    weights has `trainable=False`), in the order of `layer_group_names`. At the start of every
    `unfreeze_every`-th epoch (epochs `unfreeze_every`, `2 * unfreeze_every`, ...) it sets
    the highest frozen group trainable. `BatchNormalization` layers stay frozen, in inference
    mode with their pre-trained statistics, unless `train_batch_norm` is set.

    Keras builds an optimizer for a fixed set of variables, so after each unfreezing the
    callback replaces the model's optimizer with a copy built for the new trainable variables.
    The copy keeps the iteration count and the slot values (momenta) of the variables that were
    already training, and the new variables start with zero slots. The train function is then
    traced again.

    Args:
        unfreeze_every: the number of epochs between two unfreezings. Defaults to `1`.
        train_batch_norm: whether `BatchNormalization` layers train once their group is
            unfrozen. Defaults to `False`.

    A run resumed from a backup (`keras.callbacks.BackupAndRestore`) must call
    `unfreeze_until(model, epoch)` before `fit`, because the backup's optimizer state only
    loads into an optimizer built for the same trainable variables.

    Attributes:
        unfrozen_at: `{epoch: [layer names]}`, the layers unfrozen at each epoch of the last
            `fit`, including those that `unfreeze_until` unfroze before it.

    Example:

    >>> for layer in base.layers:
    ...     layer.trainable = False
    >>> # model = base followed by a new classifier; compile, then:
    >>> # model.fit(x, y, epochs=4, callbacks=[GradualUnfreezing(unfreeze_every=1)])

    Reference:
        Howard and Ruder, "Universal Language Model Fine-tuning for Text Classification",
        ACL 2018 (gradual unfreezing).
    """

    def __init__(self, unfreeze_every=1, train_batch_norm=False):
        super().__init__()
        if isinstance(unfreeze_every, bool) or not isinstance(unfreeze_every, int) or (
                unfreeze_every < 1):
            raise ValueError(
                f"unfreeze_every must be a positive integer number of epochs. "
                f"Received: unfreeze_every={unfreeze_every!r}."
            )
        self.unfreeze_every = unfreeze_every
        self.train_batch_norm = bool(train_batch_norm)
        self.unfrozen_at = {}
        self._frozen_groups = []
        self._unfrozen_before_fit = {}

    def on_train_begin(self, logs=None):
        self.unfrozen_at, self._unfrozen_before_fit = self._unfrozen_before_fit, {}
        self._list_frozen_groups()

    def _list_frozen_groups(self):
        self._frozen_groups = [
            names for names in layer_group_names(self.model)
            if not any(self.model.get_layer(name).trainable for name in names)
        ]

    def unfreeze_until(self, model, epoch):
        """Unfreeze the groups that an uninterrupted run unfreezes before epoch `epoch`.

        Call it before resuming at `epoch` (0-based, the number of finished epochs). The
        model then has the trainable layers and optimizer variables that the uninterrupted
        run has at the end of epoch `epoch - 1`, so a backup of that epoch restores its
        optimizer state. The next `fit` applies the rest of the schedule from `epoch` on.

        Args:
            model: the compiled model, with its groups frozen as at the start of training.
            epoch: the epoch that training resumes at.
        """
        self.set_model(model)
        self._list_frozen_groups()
        self.unfrozen_at = {}
        for past_epoch in range(1, epoch):
            self.on_epoch_begin(past_epoch)
        self._unfrozen_before_fit = dict(self.unfrozen_at)

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0 or epoch % self.unfreeze_every or not self._frozen_groups:
            return
        names = self._frozen_groups.pop()
        for name in names:
            layer = self.model.get_layer(name)
            if isinstance(layer, keras.layers.BatchNormalization) and not self.train_batch_norm:
                continue
            layer.trainable = True
        self.unfrozen_at[epoch] = names
        self._rebuild_optimizer()

    def _rebuild_optimizer(self):
        old = self.model.optimizer
        new = old.__class__.from_config(old.get_config())
        new.build(self.model.trainable_variables)
        previous = {variable.path: variable for variable in old.variables}
        for variable in new.variables:
            source = previous.get(variable.path)
            if source is not None and tuple(source.shape) == tuple(variable.shape):
                variable.assign(source)
        self.model.optimizer = new
        self.model.make_train_function(force=True)

    def get_config(self):
        return {"unfreeze_every": self.unfreeze_every, "train_batch_norm": self.train_batch_norm}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
