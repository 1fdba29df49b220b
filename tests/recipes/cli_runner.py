"""Run the kerastricks command line inside the test process."""

from kerastricks.recipes import cli


def run_cli(argv, capsys):
    """Run the CLI in this process; return (exit status, stdout, stderr)."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
