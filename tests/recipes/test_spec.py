import json

import pytest

from kerastricks.recipes import Recipe, RecipeError


def test_json_round_trip(tmp_path):
    recipe = Recipe(name="wide", width=48, activation="tanh", dropout=0.25, subset=500)
    recipe.save(tmp_path / "recipe.json")
    assert Recipe.from_file(tmp_path / "recipe.json") == recipe
    assert json.loads((tmp_path / "recipe.json").read_text())["width"] == 48


def test_yaml_round_trip(tmp_path):
    recipe = Recipe(activation="leaky_relu", activation_options={"negative_slope": 0.2})
    recipe.save(tmp_path / "recipe.yaml")
    assert Recipe.from_file(tmp_path / "recipe.yaml") == recipe


def test_overrides_parse_types():
    recipe = Recipe().with_overrides(
        ["learning_rate=0.01", "batch_norm=false", "depth=3", "activation_options={negative_slope: 0.3}",
         "activation=leaky_relu"]
    )
    assert recipe.learning_rate == 0.01
    assert recipe.batch_norm is False
    assert recipe.depth == 3
    assert recipe.activation_options == {"negative_slope": 0.3}


def test_int_accepted_for_float_field():
    assert Recipe(learning_rate=1).learning_rate == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": "ten"}, "'epochs' must be int"),
        ({"epochs": 2.5}, "'epochs' must be int"),
        ({"batch_norm": "yes"}, "'batch_norm' must be bool"),
        ({"epochs": True}, "'epochs' must be int"),
        ({"subset": "all"}, "'subset' must be int or null"),
        ({"epochs": 0}, "'epochs' must be >= 1"),
        ({"learning_rate": 0.0}, "'learning_rate' must be > 0"),
        ({"dropout": 1.0}, "'dropout' must be < 1"),
        ({"validation_split": 0.0}, "'validation_split' must be > 0"),
        ({"optimizer": "adagrad"}, "Unknown optimizer"),
        ({"activation": "swishy"}, "Unknown activation"),
        ({"initializer": "random"}, "Unknown initializer"),
    ],
)
def test_invalid_values(changes, message):
    with pytest.raises(RecipeError, match=message):
        Recipe().replace(**changes)


def test_unknown_field_named():
    with pytest.raises(RecipeError, match="Unknown recipe field 'widht'"):
        Recipe.from_dict({"widht": 64})


def test_unknown_override_named():
    with pytest.raises(RecipeError, match="Unknown recipe field 'lr'"):
        Recipe().with_overrides(["lr=0.1"])


def test_override_without_equals():
    with pytest.raises(RecipeError, match="key=value"):
        Recipe().with_overrides(["epochs"])


def test_yaml_python_tag_rejected(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(RecipeError, match="not valid JSON or YAML"):
        Recipe.from_file(path)


def test_yaml_syntax_error_one_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: [1, 2\n")
    with pytest.raises(RecipeError) as error:
        Recipe.from_file(path)
    message = str(error.value)
    assert "expected ',' or ']', but got '<stream end>' at line 2, column 1" in message
    assert "\n" not in message


def test_json_syntax_error_position(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"epochs": 2,}')
    with pytest.raises(RecipeError, match="at line 1, column 14"):
        Recipe.from_file(path)


def test_recipe_file_not_a_mapping(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        Recipe.from_file(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        Recipe.from_file(tmp_path / "absent.json")


def test_override_reads_exponent_numbers():
    recipe = Recipe().with_overrides(["learning_rate=1e-4", "epochs=3"])
    assert recipe.learning_rate == 1e-4
    assert Recipe().with_overrides(["name=1e3"]).name == "1e3"
