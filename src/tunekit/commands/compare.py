"""tunekit compare TARGET_A TARGET_B [...] --data FILE [key=value ...]

Runs the same test set through each target (run directory, model directory, hub id, or
`base` for the base model of the first run directory) and writes report.md, report.html,
metrics.png and metrics.json: the per-prompt answers side by side, every metric with its
difference from the first target, and the forgetting probe (perplexity on held-out
general text, and its change from the first target). List the reference (the base
model) first. Arguments containing '=' are config overrides.

After preference tuning: --pairs FILE (held-out chosen/rejected pairs; a --data file of
pairs is used as both) adds each target's preference accuracy and DPO's implicit reward
against the first target; --reward-model RUN scores every target's answers with a reward
model (stage rm).
"""

from __future__ import annotations

from pathlib import Path

from tunekit.commands.eval import add_eval_flags, check_reward_model, eval_config, test_set


def add_arguments(parser) -> None:
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="two or more run directories, model directories or hub ids ('base': the base model "
                             "of the first run directory); key=value arguments override the config")
    parser.add_argument("--config", metavar="YAML", help="a config whose eval: section applies")
    add_eval_flags(parser)
    parser.add_argument("--heldout", metavar="FILE", help="general text for the forgetting probe "
                        "(default: eval.heldout, else the small set tunekit ships)")
    parser.add_argument("--no-heldout", action="store_true", help="skip the forgetting probe")
    parser.add_argument("--pairs", metavar="FILE", help="held-out preference pairs (chosen / rejected): preference "
                        "accuracy and implicit reward per target (default: eval.pairs, else --data when it holds "
                        "pairs)")
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
    pairs = held_out_pairs(args.pairs or cfg.eval.pairs, data, cfg)
    if cfg.eval.reward_model:
        check_reward_model(cfg.eval.reward_model)
    task = load_task(data, cfg.eval)
    heldout = None if args.no_heldout else heldout_text(args.heldout or cfg.eval.heldout)
    print(f"test set: {getattr(data, 'path', data)}\n{task.describe()}")
    if heldout:
        print(f"forgetting probe: perplexity on {heldout[1]}")
    if pairs:
        print(f"preference: held-out pairs of {pairs.path}")
    comparison = compare(targets, task, getattr(data, "path", data), heldout, args.heldout_tokens,
                         progress=not args.quiet, trust_remote_code=args.trust_remote_code, pairs=pairs,
                         reward_model=cfg.eval.reward_model)
    paths = write_comparison(args.output or cfg.eval.report_dir or default_output(targets), comparison)
    print("\n".join(summary_lines(comparison)))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def held_out_pairs(path: str | None, data, cfg):
    """The HeldOutPairs to score: the given file (which must hold pairs), else --data when it holds pairs."""
    from tunekit.errors import ConfigError
    from tunekit.eval.preference import HeldOutPairs, is_preference_file

    if path is None:
        return HeldOutPairs(data, cfg) if is_preference_file(data) else None
    if not Path(path).exists():
        raise ConfigError(f"--pairs {path}: no such file")
    if not is_preference_file(path):
        raise ConfigError(f"--pairs {path} holds no preference pairs: its first row needs chosen and rejected")
    return HeldOutPairs(path, cfg)
