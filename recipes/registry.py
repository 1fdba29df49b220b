"""The named recipes: each is a module of `kerastricks.recipes` that defines `RECIPE`."""

import importlib

from kerastricks.recipes.spec import RecipeError

# Recipe name -> (module, one-line description).
RECIPES = {
    "baseline": ("kerastricks.recipes.baseline", "small VGG-style CNN with batch norm, Adam"),
}


def available_recipes():
    """Return the names of the registered recipes, sorted."""
    return sorted(RECIPES)


def get_recipe(name):
    """Return the `Recipe` registered as `name`.

    Raises:
        RecipeError: for an unknown name; the message lists the registered ones.
    """
    if name not in RECIPES:
        raise RecipeError(
            f"Unknown recipe {name!r}. Expected one of {available_recipes()} "
            f"or a path to a .json/.yaml recipe file."
        )
    module = importlib.import_module(RECIPES[name][0])
    return module.RECIPE
