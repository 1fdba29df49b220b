import keras
import pytest

from kerastricks.layers import HeNormal, PReLU, RReLU, he_negative_slope
from kerastricks.recipes import Recipe, RecipeError
from kerastricks.recipes.models import build_model


@pytest.mark.parametrize(
    "activation, options, pattern",
    [
        ("rrelu", {"lower": 0.5, "upper": 0.2}, r"'rrelu'.*lower must not exceed upper"),
        ("rrelu", {"sampling": "gaussian"}, r"'rrelu'.*sampling='gaussian'"),
        ("prelu", {"shared_axes": [1, 2]}, r"'prelu'.*does not take the option 'shared_axes'"),
        ("leaky_relu", {"negative_slope": 1.5}, r"'leaky_relu'.*negative_slope=1.5"),
        ("relu", {"negative_slope": 0.1}, r"'relu' takes no options"),
    ],
)
def test_invalid_activation_options(activation, options, pattern):
    with pytest.raises(RecipeError, match=pattern):
        Recipe(activation=activation, activation_options=options)


def test_lsuv_field_default_and_type():
    assert Recipe().lsuv is False
    assert Recipe(lsuv=True).lsuv is True

    with pytest.raises(RecipeError, match="'lsuv' must be bool"):
        Recipe(lsuv="yes")


@pytest.mark.parametrize(
    "activation, options, layer_class",
    [("prelu", {}, PReLU), ("rrelu", {"sampling": "uniform", "seed": 1}, RReLU)],
)
def test_model_uses_activation_and_leaky_he(activation, options, layer_class):
    recipe = Recipe(
        activation=activation, activation_options=options, initializer="he_leaky_normal",
        width=4, depth=1, convs_per_block=1, dense_units=0,
    )

    model = build_model(recipe, (8, 8, 1), 10)

    conv = model.get_layer("block1_conv1")
    assert isinstance(conv.kernel_initializer, HeNormal)
    assert conv.kernel_initializer.negative_slope == pytest.approx(
        he_negative_slope(activation, **options)
    )
    assert any(isinstance(layer, layer_class) for layer in model.layers)
    assert model(keras.ops.zeros((1, 8, 8, 1))).shape == (1, 10)


def test_lsuv_recipe_rescales_before_training():
    import keras
    import numpy as np

    from kerastricks.recipes import load_dataset
    from kerastricks.recipes.training import prepare_training

    data = load_dataset("digits", batch_size=128)
    recipe = Recipe(lsuv=True, batch_norm=False, width=8, dense_units=16)
    model, _ = prepare_training(recipe, data)
    first_images = next(iter(data.train))[0]
    conv = model.get_layer("block1_conv1")
    probe = keras.Model(model.input, conv.output)
    variance = float(np.var(probe.predict(first_images, verbose=0)))
    assert abs(variance - 1.0) <= 0.1
