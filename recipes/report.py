"""The evidence report: every experiment's claim, table, figures and verdict in one Markdown file.

`kerastricks report` collects the finished experiments in a log folder (and, with `--run`, first
runs the ones that are missing) and writes one Markdown report with their figures beside it.
Tables are rebuilt from the run folders' `metrics.json` and `measurements.json`, never copied
from an earlier summary, so the report shows exactly the numbers of the runs.
"""

import json
import shutil
import sys
from pathlib import Path

from kerastricks.recipes.experiments import (
    SIZES, format_table, run_experiment,
)

VERDICT_MARKS = {"supported": "Supported", "not supported": "Not supported",
                 "inconclusive": "Inconclusive"}


def add_report_arguments(parser):
    parser.add_argument("--logdir", default="runs",
                        help="folder holding the experiments' folders (default: %(default)s)")
    parser.add_argument("--out", default="report.md",
                        help="the Markdown file to write; its figures go to a folder beside it "
                             "named after it (default: %(default)s)")
    parser.add_argument("--run", choices=SIZES, default=None,
                        help="first run the experiments that have no finished folder in --logdir, "
                             "at this size; without it the report only collects finished ones")
    parser.add_argument("--only", action="append", default=[], metavar="EXPERIMENT",
                        help="include only this experiment; repeatable")
    parser.add_argument("--dataset", help="data set of the experiments run by --run (default: "
                                          "each experiment's, Fashion-MNIST)")
    parser.add_argument("--subset", type=int, help="training images of the experiments run by --run")
    parser.add_argument("--epochs", type=int, help="epochs of the experiments run by --run")


def run_report_command(args, parser):
    from kerastricks.recipes.registry import EXPERIMENTS, get_experiment

    unknown = [name for name in args.only if name not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment {unknown[0]!r}; expected one of {list(EXPERIMENTS)}")
    names = args.only or list(EXPERIMENTS)
    logdir = Path(args.logdir)
    if args.run:
        changes = {key: value for key, value in
                   (("dataset", args.dataset), ("subset", args.subset), ("epochs", args.epochs))
                   if value is not None}
        for name in names:
            if not (logdir / name / "experiment.json").is_file():
                print(f"Running experiment {name} ({args.run} size).", flush=True)
                run_experiment(get_experiment(name), args.run, logdir, changes, verbose=0)
    out = Path(args.out)
    found, missing = write_report(logdir, out, names)
    print(f"Wrote {out} with {len(found)} experiment{'s' if len(found) != 1 else ''}.")
    for name in missing:
        print(f"  not run yet: {name} (run it with: kerastricks run {name} --logdir {logdir})")
    return 0


def collect(logdir, names):
    """Return `(summaries, missing)`: the finished experiments' summaries with their rows rebuilt
    from the run folders, and the names without a finished experiment folder."""
    from kerastricks.recipes.registry import get_experiment

    summaries, missing = [], []
    for name in names:
        folder = Path(logdir) / name
        path = folder / "experiment.json"
        if not path.is_file():
            missing.append(name)
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        experiment = get_experiment(name)
        summary["rows"] = [experiment.row(row["variant"], folder, folder / row["run"])
                           for row in summary["rows"]]
        # The verdict is recomputed from the rebuilt rows, so it always matches the table.
        verdict = experiment.verdict(summary["rows"])
        summary["verdict"] = {"status": verdict.status, "text": verdict.text}
        summary["folder"] = str(folder)
        summaries.append(summary)
    return summaries, missing


def write_report(logdir, out, names):
    """Write the report of the experiments `names` in `logdir` to `out`; return (found, missing)."""
    out = Path(out)
    summaries, missing = collect(logdir, names)
    figures_folder = out.with_name(out.stem + "_figures")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(summaries, missing, figures_folder.name, logdir)
    for summary in summaries:
        target = figures_folder / summary["name"]
        target.mkdir(parents=True, exist_ok=True)
        for figure in summary["figures"]:
            shutil.copyfile(Path(summary["folder"]) / figure["file"], target / figure["file"])
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    return [s["name"] for s in summaries], missing


def render_report(summaries, missing, figures_link, logdir="runs"):
    """Return the report's Markdown; `logdir` goes into the commands of experiments not run."""
    lines = ["# What the tricks do on real images: the measurements", ""]
    lines += [
        "Each section below is one claim of the survey \"Must Know Tips/Tricks in Deep Neural "
        "Networks\" (Xiu-Shen Wei), measured by training variants of one recipe that differ only "
        "in the trick. Hyperparameters are fixed in advance or chosen on the validation split; "
        "the test split is only used for the numbers in the tables.",
        "",
    ]
    if summaries:
        lines += _summary_table(summaries) + [""]
        lines += _environment(summaries[0]["environment"]) + [""]
    for summary in summaries:
        lines += _section(summary, figures_link) + [""]
    if missing:
        lines += ["## Not run yet", ""]
        logdir_flag = "" if Path(logdir) == Path("runs") else f" --logdir {logdir}"
        lines += [f"- `{name}`: `kerastricks run {name}{logdir_flag}`" for name in missing]
        lines.append("")
    return "\n".join(lines)


def _summary_table(summaries):
    lines = ["| experiment | verdict | size | time |", "|---|---|---|---:|"]
    for summary in summaries:
        verdict = VERDICT_MARKS.get(summary["verdict"]["status"], summary["verdict"]["status"])
        lines.append(f"| [{summary['title']}](#{summary['name'].replace('_', '-')}) | {verdict} "
                     f"| {summary['size']} | {summary['train_seconds'] / 60:.1f} min |")
    return lines


def _environment(environment):
    packages = ", ".join(f"{name} {version}" for name, version in environment["packages"].items()
                         if version)
    accelerators = ", ".join(environment["accelerators"]) or "none"
    return [
        f"Measured with Python {environment['python']} and {packages}, on "
        f"{environment['cpu'] or environment['machine']} with {environment['cpu_cores']} cores "
        f"({environment['system']}); accelerators: {accelerators}.",
    ]


def _section(summary, figures_link):
    verdict = summary["verdict"]
    images = summary["images"]
    lines = [
        f"<a id=\"{summary['name'].replace('_', '-')}\"></a>",
        f"## {summary['title']}",
        "",
        f"**Claim.** {summary['claim']} ({summary['source']})",
        "",
        f"**Verdict here: {VERDICT_MARKS.get(verdict['status'], verdict['status'])}.** "
        f"{verdict['text']}",
        "",
        format_table(summary["columns"], summary["rows"]),
        "",
        f"Data: {summary['dataset']}, {images['train']:,} training, {images['validation']:,} "
        f"validation and {images['test']:,} test images; seed {summary['seed']}; "
        f"{summary['size']} size. {summary['notes']}".rstrip(),
        "",
        f"Command: `{summary['command']}` ({_times(summary)}).",
        "",
    ]
    for figure in summary["figures"]:
        lines += [f"![{figure['caption']}]({figures_link}/{summary['name']}/{figure['file']})",
                  f"*{figure['caption']}*", ""]
    return lines


def _times(summary):
    train, wall = summary["train_seconds"] / 60, summary["wall_seconds"] / 60
    # A command that reused finished runs took less time than their training did.
    if wall < train:
        return f"{train:.1f} min of training"
    return f"{train:.1f} min of training, {wall:.1f} min in all"


def main(argv=None):
    from kerastricks.recipes.cli import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])

