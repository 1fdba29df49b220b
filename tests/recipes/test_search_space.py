import dataclasses
import json

import keras_tuner
import pytest

from kerastricks.recipes.search_defaults import DEFAULT_CANDIDATES, default_space
from kerastricks.recipes.search_space import FIXED_FIELDS, SearchError, SearchSpace
from kerastricks.recipes.spec import Recipe

LEAKY_SPACE = {
    "activation": ["relu", "leaky_relu", "rrelu"],
    "activation_options.negative_slope": {"values": [0.1, 0.3], "when": {"activation": "leaky_relu"}},
    "activation_options.lower": {"values": [0.05], "when": {"activation": ["rrelu"]}},
    "activation_options.upper": {"values": [0.4], "when": {"activation": ["rrelu"]}},
    "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
    "width": {"min": 8, "max": 32, "step": 8},
    "batch_norm": [True, False],
}


def test_default_space_uses_existing_fields():
    space = default_space()
    fields = {field.name for field in dataclasses.fields(Recipe)}
    assert space.entries
    for entry in space.entries:
        assert entry.field in fields
        assert entry.field not in FIXED_FIELDS
    expected = [name for name in DEFAULT_CANDIDATES if name.partition(".")[0] in fields]
    assert set(space.names) <= set(expected)


def test_default_space_values_are_valid_recipes():
    space = default_space()
    for entry in space.entries:
        settings = {}
        if entry.parent:
            settings[entry.parent] = entry.parent_values[0]
        samples = entry.values if entry.kind == "choice" else [entry.min, entry.max]
        for value in samples:
            recipe = space.recipe_for({**settings, entry.name: value})
            assert isinstance(recipe, Recipe)


def test_default_space_conditional_activation_options():
    space = default_space()
    assert {"activation", "initializer", "learning_rate", "dropout", "l2"} <= set(space.names)
    assert space.entry("activation_options.negative_slope").parent == "activation"
    assert space.entry("activation_options.negative_slope").parent_values == ["leaky_relu"]
    assert space.entry("activation_options.lower").parent_values == ["rrelu"]
    assert space.entry("activation_options.upper").parent_values == ["rrelu"]


def test_declare_registers_conditionals():
    space = SearchSpace(LEAKY_SPACE)
    hp = keras_tuner.HyperParameters()
    values = space.declare(hp)
    names = [parameter.name for parameter in hp.space]
    assert names[0] == "activation"
    assert set(names) == set(LEAKY_SPACE)
    # The default activation is relu, so none of the activation options is active.
    assert values["activation"] == "relu"
    assert "activation_options.negative_slope" not in values
    assert "activation_options.lower" not in values
    assert values["batch_norm"] is True
    assert isinstance(hp.space[names.index("width")], keras_tuner.engine.hyperparameters.Int)
    assert isinstance(hp.space[names.index("learning_rate")], keras_tuner.engine.hyperparameters.Float)


def test_declare_activates_slope_for_leaky_relu():
    space = SearchSpace(LEAKY_SPACE)
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    hp.values["activation"] = "leaky_relu"
    hp.values["activation_options.negative_slope"] = 0.3
    values = space.declare(hp)
    assert values["activation_options.negative_slope"] == 0.3
    assert "activation_options.lower" not in values
    recipe = space.recipe_for(values)
    assert recipe.activation == "leaky_relu"
    assert recipe.activation_options == {"negative_slope": 0.3}


def test_recipe_for_drops_base_options():
    base = Recipe(activation="leaky_relu", activation_options={"negative_slope": 0.2})
    space = SearchSpace({"activation": ["relu", "elu"]}, base=base)
    recipe = space.recipe_for({"activation": "relu"})
    assert recipe.activation == "relu"
    assert recipe.activation_options == {}


def test_recipe_for_keeps_unsearched_fields():
    base = Recipe(width=8, depth=1, dropout=0.25)
    space = SearchSpace({"depth": [1, 2]}, base=base)
    recipe = space.recipe_for({"depth": 2})
    assert (recipe.width, recipe.depth, recipe.dropout) == (8, 2, 0.25)


def test_list_values_become_json_labels():
    space = SearchSpace({"activation_options": [{}, {"negative_slope": 0.2}]},
                        base=Recipe(activation="leaky_relu"))
    entry = space.entry("activation_options")
    assert entry.labels == ["{}", '{"negative_slope": 0.2}']
    assert entry.value_of('{"negative_slope": 0.2}') == {"negative_slope": 0.2}
    flags = SearchSpace({"batch_norm": [True, False]}).entry("batch_norm")
    assert flags.labels == ["true", "false"]
    assert flags.value_of("false") is False


def test_space_file_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "activation: [relu, leaky_relu]\n"
        "activation_options.negative_slope:\n"
        "  values: [0.1, 0.3]\n"
        "  when: {activation: leaky_relu}\n"
        "dropout: {min: 0.0, max: 0.5, step: 0.25}\n"
    )
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({
        "activation": ["relu", "leaky_relu"],
        "activation_options.negative_slope": {"values": [0.1, 0.3], "when": {"activation": "leaky_relu"}},
        "dropout": {"min": 0.0, "max": 0.5, "step": 0.25},
    }))
    from_yaml = SearchSpace.from_file(yaml_file)
    from_json = SearchSpace.from_file(json_file)
    assert from_yaml.to_config() == from_json.to_config()
    assert from_yaml.entry("dropout").kind == "float"


def test_fields_added_to_recipe_are_searchable():
    @dataclasses.dataclass
    class ExtendedRecipe(Recipe):
        colour_jitter: float = 0.0

    space = SearchSpace({"colour_jitter": {"min": 0.0, "max": 0.4}}, base=ExtendedRecipe())
    assert space.entry("colour_jitter").kind == "float"
    assert space.recipe_for({"colour_jitter": 0.3}).colour_jitter == 0.3


BAD_SPACES = [
    ("unknown field", {"colour": ["red"]}, "Unknown recipe field 'colour' in the search space. Expected one of"),
    ("fixed field", {"epochs": [1, 2]}, "'epochs' is fixed for a whole search"),
    ("unknown entry key", {"width": {"values": [8], "choices": [16]}}, "Unknown key 'choices'"),
    ("empty choice list", {"activation": []}, "needs a non-empty list of values"),
    ("min above max", {"learning_rate": {"min": 0.1, "max": 0.01}}, "needs min <= max"),
    ("zero step", {"width": {"min": 8, "max": 16, "step": 0}}, "needs step > 0"),
    ("log sampling from zero", {"l2": {"min": 0.0, "max": 0.1, "sampling": "log"}}, "needs min > 0"),
    ("range of a string field", {"activation": {"min": 1, "max": 2}}, "needs an int or float field"),
    ("fractional int range", {"width": {"min": 8.5, "max": 16}}, "must be integers"),
    ("rejected value", {"activation": ["relu", "swishy"]}, "value 'swishy' is not a valid recipe value"),
    ("out of range value", {"dropout": [0.0, 1.5]}, "value 1.5 is not a valid recipe value"),
    ("duplicate value", {"depth": [1, 1]}, "lists 1 more than once"),
    ("option without when", {"activation": ["relu", "rrelu"], "activation_options.lower": [0.1]},
     "'activation_options.lower': value 0.1 when {'activation': 'relu'} is not a valid"),
    ("when on unsearched field", {"activation_options.lower": {"values": [0.1], "when": {"activation": "rrelu"}}},
     "is conditional on 'activation', which must be a searched field"),
    ("when value not a choice", {"activation": ["relu"], "activation_options.lower":
                                 {"values": [0.1], "when": {"activation": "rrelu"}}},
     "'when' value 'rrelu' is not among the values of 'activation'"),
    ("key on a plain field", {"width.size": [8]}, "only dict fields take a '.KEY' suffix"),
    ("empty space", {}, "must be a non-empty mapping"),
]


@pytest.mark.parametrize("case, entries, message", BAD_SPACES, ids=[case for case, _, _ in BAD_SPACES])
def test_bad_space_raises(case, entries, message):
    with pytest.raises(SearchError) as info:
        SearchSpace(entries)
    assert message in str(info.value)


def test_bad_space_file(tmp_path):
    with pytest.raises(SearchError, match="Search space file not found"):
        SearchSpace.from_file(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("activation: [relu\n")
    with pytest.raises(SearchError, match="is not valid JSON or YAML"):
        SearchSpace.from_file(broken)


def test_grid_needs_steps():
    SearchSpace({"width": {"min": 8, "max": 16, "step": 8}}).check_grid()
    with pytest.raises(SearchError, match="'learning_rate' is a range without a step"):
        SearchSpace({"learning_rate": {"min": 1e-4, "max": 1e-2}}).check_grid()
