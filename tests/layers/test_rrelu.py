import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from kerastricks.layers import RReLU
from tests.layers.contract import check_layer_contract, tolerance

# Enough elements that the sample mean of the slopes is within about 1e-4 of the true mean.
SAMPLE_SIZE = 200_000


# The two ways RReLU draws its training slopes: the hash generator that TensorFlow runs as one
# XLA kernel, and `keras.random.uniform`, which the other backends use.
PATHS = ["tensorflow", "generic"]


def randomize(layer, x, path):
    """Call `layer` in training mode on `x` through one slope-drawing path."""
    if path == "generic":
        return layer._randomize_generic(keras.ops.convert_to_tensor(x))
    return layer(x, training=True)


def sample_slopes(layer, size=SAMPLE_SIZE, path="tensorflow"):
    """Return the training slopes an RReLU draws for `size` negative inputs."""
    outputs = randomize(layer, -np.ones(size, "float32"), path)
    return -keras.ops.convert_to_numpy(outputs).astype("float64")


def test_inference_reciprocal_default():
    x = np.array([-11.0, -3.5, -1e-3, 0.0, 0.7, 5.0], "float32")
    expected = np.where(x >= 0, x, x * 2.0 / (8.0 + 3.0))  # Xu et al.: x / ((3 + 8) / 2).

    output = keras.ops.convert_to_numpy(RReLU()(x, training=False))

    np.testing.assert_allclose(output, expected, *tolerance("float32"))


def test_inference_uniform_is_mean_slope():
    x = np.linspace(-4.0, 4.0, 17).astype("float32")
    lower, upper = 0.1, 0.3
    expected = np.where(x >= 0, x, x * (lower + upper) / 2.0)

    output = RReLU(lower, upper, sampling="uniform")(x, training=False)

    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), expected, *tolerance("float32"))


def test_inference_slope_property():
    assert RReLU(0.2, 0.25).inference_slope == pytest.approx(2.0 / (5.0 + 4.0))
    assert RReLU(0.2, 0.25, sampling="uniform").inference_slope == pytest.approx(0.225)


@pytest.mark.parametrize("path", PATHS)
def test_reciprocal_slopes_range_mean_spread(path):
    slopes = sample_slopes(RReLU(seed=1), path=path)
    # slope = 1/a, a ~ U(3, 8): E[slope] = ln(8/3)/5 and E[slope**2] = (1/3 - 1/8)/5.
    mean = np.log(8.0 / 3.0) / 5.0
    std = np.sqrt((1.0 / 3.0 - 1.0 / 8.0) / 5.0 - mean**2)

    assert slopes.min() >= 1.0 / 8.0 - 1e-6
    assert slopes.max() <= 1.0 / 3.0 + 1e-6
    assert abs(slopes.mean() - mean) < 5 * std / np.sqrt(SAMPLE_SIZE)
    assert slopes.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("path", PATHS)
def test_reciprocal_slopes_distribution(path):
    slopes = sample_slopes(RReLU(seed=2), size=20_000, path=path)

    # P(1/a <= t) = P(a >= 1/t) = (8 - 1/t) / 5 for t in [1/8, 1/3].
    def cdf(t):
        return np.clip((8.0 - 1.0 / t) / 5.0, 0.0, 1.0)

    assert stats.kstest(slopes, cdf).pvalue > 1e-3
    assert stats.kstest(slopes, stats.uniform(1 / 8, 1 / 3 - 1 / 8).cdf).pvalue < 1e-6
    # More slopes lie near `lower` than under uniform sampling: the median is 1/5.5, not 0.229.
    assert np.median(slopes) == pytest.approx(1.0 / 5.5, abs=0.005)


@pytest.mark.parametrize("path", PATHS)
def test_uniform_slopes_range_mean_spread(path):
    lower, upper = 0.05, 0.45
    slopes = sample_slopes(RReLU(lower, upper, sampling="uniform", seed=3), path=path)
    std = (upper - lower) / np.sqrt(12.0)

    assert slopes.min() >= lower - 1e-6
    assert slopes.max() <= upper + 1e-6
    assert abs(slopes.mean() - (lower + upper) / 2) < 5 * std / np.sqrt(SAMPLE_SIZE)
    assert slopes.std() == pytest.approx(std, rel=0.02)
    assert stats.kstest(slopes[:20_000], stats.uniform(lower, upper - lower).cdf).pvalue > 1e-3


def test_each_element_own_slope():
    slopes = sample_slopes(RReLU(seed=4), size=10_000)

    # float32 has about 2**21 values in [1/8, 1/3], so repeats are rare but possible.
    assert len(np.unique(slopes)) > 0.99 * len(slopes)


def test_slopes_finer_than_16_bits():
    # A 16-bit draw allows at most 65,536 distinct slopes. The 2**24-step grid, after float32
    # rounding, repeats 0.7% of these 200,000 draws (`keras.random.uniform` repeats 1.2%).
    slopes = sample_slopes(RReLU(0.05, 0.45, sampling="uniform", seed=12))

    assert len(np.unique(slopes)) > 0.95 * SAMPLE_SIZE


def test_uniform_slopes_fine_histogram():
    lower, upper = 0.0, 0.5
    slopes = sample_slopes(RReLU(lower, upper, sampling="uniform", seed=13))

    # 4,096 equal bins of about 49 draws each: a chi-square test of the fine structure.
    counts, _ = np.histogram(slopes, bins=4096, range=(lower, upper))

    assert counts.sum() == SAMPLE_SIZE
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("lag", [1, 2, 3, 32, 1024, 65536])
def test_neighbouring_slopes_uncorrelated(lag):
    slopes = sample_slopes(RReLU(seed=14))

    correlation = np.corrcoef(slopes[:-lag], slopes[lag:])[0, 1]

    # Independent draws give a sample correlation with a standard deviation of about 1/sqrt(n).
    assert abs(correlation) < 5 / np.sqrt(SAMPLE_SIZE)


def test_calls_and_seeds_uncorrelated():
    layer = RReLU(seed=15)
    first = sample_slopes(layer)
    second = sample_slopes(layer)
    next_seed = sample_slopes(RReLU(seed=16))
    bound = 5 / np.sqrt(SAMPLE_SIZE)

    assert abs(np.corrcoef(first, second)[0, 1]) < bound
    assert abs(np.corrcoef(first, next_seed)[0, 1]) < bound


def test_new_slopes_each_traced_call():
    layer = RReLU(seed=17)
    x = -np.ones((4, 32), "float32")
    draw = tf.function(lambda: layer(x, training=True))

    first = draw().numpy()
    second = draw().numpy()

    assert not np.array_equal(first, second)
    assert first.min() >= -1.0 / 3.0 - 1e-6
    assert first.max() <= -1.0 / 8.0 + 1e-6


def test_float16_slopes_within_bounds():
    layer = RReLU(seed=18, dtype="mixed_float16")

    outputs = layer(-np.ones(10_000, "float32"), training=True)
    slopes = -keras.ops.convert_to_numpy(outputs).astype("float64")

    assert keras.backend.standardize_dtype(outputs.dtype) == "float16"
    # float16 rounds to 11 significant bits, so the bounds hold to a relative 2**-11.
    assert slopes.min() >= (1.0 / 8.0) * (1 - 2**-11)
    assert slopes.max() <= (1.0 / 3.0) * (1 + 2**-11)
    assert slopes.mean() == pytest.approx(np.log(8.0 / 3.0) / 5.0, rel=0.01)


def test_positive_inputs_pass_in_training():
    x = np.abs(np.random.default_rng(0).standard_normal((64, 5)).astype("float32"))

    output = RReLU(seed=5)(x, training=True)

    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), x)


def test_equal_bounds_fix_slope():
    x = np.array([-2.0, 3.0], "float32")

    output = RReLU(0.2, 0.2, seed=6)(x, training=True)

    np.testing.assert_allclose(keras.ops.convert_to_numpy(output), [-0.4, 3.0], rtol=1e-6)


def test_seed_determinism():
    x = np.random.default_rng(1).standard_normal((8, 16)).astype("float32")

    first = keras.ops.convert_to_numpy(RReLU(seed=7)(x, training=True))
    second = keras.ops.convert_to_numpy(RReLU(seed=7)(x, training=True))
    other_seed = keras.ops.convert_to_numpy(RReLU(seed=8)(x, training=True))

    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other_seed)


def test_paths_draw_different_slopes():
    x = -np.ones((8, 16), "float32")

    hashed = keras.ops.convert_to_numpy(randomize(RReLU(seed=19), x, "tensorflow"))
    uniform = keras.ops.convert_to_numpy(randomize(RReLU(seed=19), x, "generic"))

    assert not np.array_equal(hashed, uniform)


def test_new_slopes_each_call():
    layer = RReLU(seed=9)
    x = -np.ones((4, 32), "float32")

    first = keras.ops.convert_to_numpy(layer(x, training=True))
    second = keras.ops.convert_to_numpy(layer(x, training=True))

    assert not np.array_equal(first, second)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_is_sampled_slope(path):
    x = tf.constant(np.random.default_rng(2).standard_normal((32, 8)).astype("float32"))
    layer = RReLU(seed=10)

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = randomize(layer, x, path)
    gradient = tape.gradient(y, x).numpy()
    x, y = x.numpy(), y.numpy()

    negative = x < 0
    np.testing.assert_array_equal(gradient[~negative], 1.0)
    np.testing.assert_allclose(gradient[negative], y[negative] / x[negative], rtol=1e-5)
    assert gradient[negative].min() >= 1.0 / 8.0 - 1e-6
    assert gradient[negative].max() <= 1.0 / 3.0 + 1e-6


def test_inference_gradient_is_fixed_slope():
    x = tf.constant([-2.0, -0.5, 1.0])

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = RReLU()(x, training=False)

    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [2 / 11, 2 / 11, 1.0], rtol=1e-6)


@pytest.mark.parametrize("training", [False, True])
def test_contract(tmp_path, training):
    check_layer_contract(
        lambda: RReLU(lower=0.1, upper=0.3, seed=11),
        (4, 6, 6, 3),
        expected_output_shape=(4, 6, 6, 3),
        expected_trainable_weights=0,
        expected_non_trainable_weights=0,
        training=training,
        run_fresh_process=False,  # test_activations.py reloads RReLU in a fresh process.
        save_dir=tmp_path,
    )


def test_config_keeps_arguments():
    layer = RReLU(lower=0.05, upper=0.2, sampling="uniform", seed=3, name="noisy")

    config = layer.get_config()

    assert {key: config[key] for key in ("lower", "upper", "sampling", "seed", "name")} == {
        "lower": 0.05, "upper": 0.2, "sampling": "uniform", "seed": 3, "name": "noisy"
    }


@pytest.mark.parametrize(
    "arguments, error, pattern",
    [
        ({"lower": 0.3, "upper": 0.2}, ValueError, r"lower must not exceed upper.*lower=0.3"),
        ({"lower": -0.1}, ValueError, r"lower must be a negative slope in \[0, 1\).*lower=-0.1"),
        ({"upper": 1.0}, ValueError, r"upper must be a negative slope in \[0, 1\).*upper=1.0"),
        ({"upper": float("nan")}, ValueError, r"upper must be finite.*upper=nan"),
        ({"lower": "0.1"}, TypeError, r"lower must be a real number.*lower='0.1'"),
        ({"sampling": "normal"}, ValueError, r"\['reciprocal', 'uniform'\].*sampling='normal'"),
        ({"lower": 0.0}, ValueError, r"above 0 with sampling='reciprocal'.*lower=0.0"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer or None.*seed=1.5"),
    ],
)
def test_invalid_arguments(arguments, error, pattern):
    with pytest.raises(error, match=pattern):
        RReLU(**arguments)


def test_uniform_allows_zero_lower():
    layer = RReLU(lower=0.0, upper=0.2, sampling="uniform")

    assert layer.inference_slope == pytest.approx(0.1)
