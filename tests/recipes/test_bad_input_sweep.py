"""Table-driven sweep of user mistakes on the command line: each is one line, exit status 2."""

import pytest
from PIL import Image

from kerastricks.recipes import cli
from tests.recipes.image_files import write_png_folder


def _write_inputs(folder):
    """Create the recipe files and image folders that the table refers to as {tmp}/NAME."""
    (folder / "empty.yaml").write_text("")
    (folder / "truncated.json").write_text('{"epochs": 3, "width":')
    (folder / "unknown.yaml").write_text("epochs: 2\nlearning_rte: 0.1\n")
    (folder / "tagged.yaml").write_text("epochs: !!python/object/apply:os.getcwd []\n")
    (folder / "list.json").write_text("[1, 2]")
    (folder / "wrong_type.json").write_text('{"batch_norm": "sometimes"}')
    write_png_folder(folder / "sizes", {"a": 5, "b": 5})
    Image.new("L", (30, 30)).save(folder / "sizes" / "b" / "big.png")
    write_png_folder(folder / "truncated_png", {"a": 5, "b": 5})
    data = (folder / "truncated_png" / "a" / "0.png").read_bytes()
    (folder / "truncated_png" / "a" / "0.png").write_bytes(data[: len(data) // 2])
    write_png_folder(folder / "empty_png", {"a": 5, "b": 5})
    (folder / "empty_png" / "b" / "0.png").write_bytes(b"")
    (folder / "one_class" / "a").mkdir(parents=True)


# (case, argv after "kerastricks", expected text on standard error)
SWEEP = [
    ("no command", [], "the following arguments are required: COMMAND"),
    ("unknown command", ["train"], "invalid choice: 'train'"),
    ("run without recipe", ["run"], "the following arguments are required: RECIPE"),
    ("empty recipe name", ["run", ""], "Unknown recipe ''"),
    ("empty epochs", ["run", "baseline", "--epochs", ""], "expected a positive integer, received ''"),
    ("float epochs", ["run", "baseline", "--epochs", "1.5"], "expected a positive integer, received '1.5'"),
    ("zero subset", ["run", "baseline", "--subset", "0"], "expected a positive integer, received '0'"),
    ("negative batch", ["run", "baseline", "--batch-size", "-1"], "expected a positive integer, received '-1'"),
    ("negative seed", ["run", "baseline", "--seed", "-1"], "expected an integer >= 0, received '-1'"),
    ("empty set", ["run", "baseline", "--set", ""], "must have the form key=value"),
    ("set without key", ["run", "baseline", "--set", "=3"], "must have the form key=value"),
    ("set empty value", ["run", "baseline", "--set", "epochs="], "'epochs' must be int"),
    ("dropout above one", ["run", "baseline", "--set", "dropout=1.5"], "'dropout' must be >= 0.0 and <= 1.0"),
    ("list for a number", ["run", "baseline", "--set", "width=[1, 2]"], "'width' must be int"),
    ("flag and set", ["run", "baseline", "--subset", "100", "--set", "subset=200"], "both set subset"),
    ("resume and overwrite", ["run", "baseline", "--resume", "--overwrite"], "contradict each other"),
    ("empty dataset", ["run", "baseline", "--dataset", ""], "Unknown data set ''"),
    ("folder without path", ["run", "baseline", "--dataset", "folder:"], "folder: needs a path"),
    ("single class folder", ["run", "baseline", "--dataset", "folder:{tmp}/one_class"], "at least 2"),
    ("mixed image sizes", ["run", "baseline", "--dataset", "folder:{tmp}/sizes"], "different sizes"),
    ("truncated png", ["run", "baseline", "--dataset", "folder:{tmp}/truncated_png"], "is not a readable image"),
    ("empty png", ["run", "baseline", "--dataset", "folder:{tmp}/empty_png"], "is not a readable image"),
    ("missing recipe file", ["run", "{tmp}/absent.yaml"], "Recipe file not found"),
    ("empty recipe file", ["run", "{tmp}/empty.yaml"], "is empty"),
    ("truncated recipe file", ["run", "{tmp}/truncated.json"], "is not valid JSON or YAML"),
    ("unknown recipe field", ["run", "{tmp}/unknown.yaml"], "Unknown recipe field 'learning_rte'"),
    ("yaml object tag", ["run", "{tmp}/tagged.yaml"], "is not valid JSON or YAML"),
    ("recipe file not mapping", ["run", "{tmp}/list.json"], "must be a mapping"),
    ("recipe field wrong type", ["run", "{tmp}/wrong_type.json"], "'batch_norm' must be bool"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    _write_inputs(folder)
    return folder


@pytest.mark.parametrize("case, argv, message", SWEEP, ids=[row[0] for row in SWEEP])
def test_user_mistake(case, argv, message, inputs, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(inputs)) for part in argv]
    if argv[:1] == ["run"]:
        argv += ["--logdir", str(tmp_path / "runs")]
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
