"""tunekit compare TARGET_A TARGET_B [...] --data FILE [key=value ...]

Runs the same test set through each target (run directory, model directory, hub id, or
`base` for the base model of the first run directory) and writes report.md, report.html,
metrics.png and metrics.json: the per-prompt answers side by side, every metric with its
difference from the first target, and the forgetting probe (perplexity on held-out
general text, and its change from the first target). List the reference (the base
model) first. Arguments containing '=' are config overrides.
"""

from __future__ import annotations

from pathlib import Path

from tunekit.commands.eval import add_eval_flags, eval_config, test_set


def add_arguments(parser) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="two or more run directories, model directories or hub ids ('base': the base model "
                             "of the first run directory); key=value arguments override the config")
    parser.add_argument("--config", metavar="YAML", help="a config whose eval: section applies")
    add_eval_flags(parser)
    parser.add_argument("--heldout", metavar="FILE", help="general text for the forgetting probe "
                        "(default: eval.heldout, else the small set tunekit ships)")
    parser.add_argument("--no-heldout", action="store_true", help="skip the forgetting probe")
    parser.epilog = "output: --output, else eval.report_dir, else LAST_RUN_DIRECTORY/compare, else ./compare"


def default_output(targets: list[str]) -> Path:
    from tunekit.rundir import is_run_dir

    runs = [t for t in targets if is_run_dir(t)]
    return Path(runs[-1]) / "compare" if runs else Path("compare")


def run(args) -> int:
    from tunekit.eval.compare import compare, write_comparison
    from tunekit.eval.perplexity import heldout_text
    from tunekit.eval.report import summary_lines
    from tunekit.eval.tasks import load_task

    args.overrides = [t for t in args.targets if "=" in t]
    targets = [t for t in args.targets if "=" not in t]
    cfg = eval_config(args, args.config)
    data = test_set(cfg, args)
    task = load_task(data, cfg.eval)
    heldout = None if args.no_heldout else heldout_text(args.heldout or cfg.eval.heldout)
    print(f"test set: {getattr(data, 'path', data)}\n{task.describe()}")
    if heldout:
        print(f"forgetting probe: perplexity on {heldout[1]}")
    comparison = compare(targets, task, getattr(data, "path", data), heldout, args.heldout_tokens,
                         progress=not args.quiet, trust_remote_code=args.trust_remote_code)
    paths = write_comparison(args.output or cfg.eval.report_dir or default_output(targets), comparison)
    print("\n".join(summary_lines(comparison)))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
