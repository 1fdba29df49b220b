"""Read TensorBoard event files back with TensorBoard's own reader."""

import numpy as np
from tensorboard.backend.event_processing import event_accumulator


def load_events(folder):
    """Return a loaded `EventAccumulator` of `folder`, keeping every event."""
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return accumulator


def tags_by_plugin(accumulator):
    """Return {plugin name: set of tags} of the TF2 summaries (stored as tensors)."""
    plugins = {}
    for tag in accumulator.Tags()["tensors"]:
        name = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        plugins.setdefault(name, set()).add(tag)
    return plugins


def scalar_series(accumulator, tag):
    """Return `(steps, values)` of a scalar tag."""
    events = accumulator.Tensors(tag)
    steps = [event.step for event in events]
    values = [float(np.asarray(_tensor(event))) for event in events]
    return steps, values


def image_pngs(accumulator, tag):
    """Return the encoded PNG bytes of each event of an image tag."""
    # An image summary tensor is [width, height, png bytes...] as strings.
    return [_tensor(event)[2] for event in accumulator.Tensors(tag)]


def _tensor(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)
