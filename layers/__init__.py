"""Keras layers and initializers for the tricks of training deep convolutional networks."""

from kerastricks.layers.activations import available_activations, get_activation
from kerastricks.layers.initializers import available_initializers, get_initializer
