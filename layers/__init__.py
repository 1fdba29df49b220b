"""Keras layers and initializers for the tricks of training deep convolutional networks."""

from kerastricks.layers.activations import (
    available_activations,
    get_activation,
    he_negative_slope,
)
from kerastricks.layers.initializers import (
    HeNormal,
    HeUniform,
    available_initializers,
    get_initializer,
)
from kerastricks.layers.lsuv import apply_lsuv
from kerastricks.layers.prelu import PReLU
from kerastricks.layers.rrelu import RReLU
from kerastricks.layers.color_jitter import RandomHSVJitter
from kerastricks.layers.crops import RandomPadCrop, RandomResizedCrop
from kerastricks.layers.fancy_pca import FancyPCA
from kerastricks.layers.minmax import MinMaxScaling
from kerastricks.layers.views import flip_views, predict_with_views, ten_crop_views
from kerastricks.layers.whitening import Whitening
