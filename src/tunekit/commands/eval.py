"""tunekit eval CONFIG.yaml [key=value ...]  |  tunekit eval TARGET --data FILE [key=value ...]

Answers a test set with a run directory, model directory or hub id (a config evaluates
its train.output_dir on eval.test_data, else its first data.eval_datasets entry) and
writes predictions.jsonl and metrics.json. Metrics come from eval.metrics, or from the
data when that is empty; the choice is printed. --heldout adds the perplexity probe;
--reward-model RUN scores every answer with a reward model (stage rm). A test set of
preference pairs (chosen / rejected) is ranked instead: preference accuracy, and DPO's
implicit reward for a LoRA policy (tunekit.eval.preference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunekit.commands.options import add_trust_remote_code
from tunekit.config import DATA_FORMATS, Config, DatasetSpec, load_config, validate
from tunekit.errors import ConfigError
from tunekit.eval.perplexity import DEFAULT_MAX_TOKENS

CONFIG_SUFFIXES = (".yaml", ".yml")
# flag -> eval config key; a flag given on the command line wins over the config
FLAG_KEYS = {"data": "test_data", "metrics": "metrics", "max_samples": "max_samples",
             "max_new_tokens": "max_new_tokens", "batch_size": "predict_batch_size", "shots": "shots",
             "shot_data": "shot_data", "reward_model": "reward_model"}


def add_eval_flags(parser) -> None:
    """The flags eval and compare share; each sets one key of the eval: config section."""
    parser.add_argument("--data", metavar="FILE", help="test set: any dataset format, or C-Eval/CMMLU/MMLU "
                        "CSV/JSON files (a file or folder); rows without answers are predicted, not scored")
    parser.add_argument("--metrics", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                        help="comma-separated: exact_match, bleu-4, rouge-1, rouge-2, rouge-l, entity, choice "
                             "(default: chosen from the data)")
    parser.add_argument("--max-samples", type=int, help="only the first N rows")
    parser.add_argument("--max-new-tokens", type=int, help="generation limit per answer (default 256)")
    parser.add_argument("--batch-size", type=int, help="prompts per generate call (default 16)")
    parser.add_argument("--shots", type=int, help="multiple choice: answered examples per question (default 0)")
    parser.add_argument("--shot-data", metavar="PATH", help="multiple choice: answered examples (dev split)")
    parser.add_argument("--reward-model", metavar="RUN", help="a reward-model run directory (train.stage: rm) "
                        "that scores every answer; the mean score is reported")
    parser.add_argument("--heldout-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"perplexity probe: tokens scored at most (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--output", "-o", metavar="DIR", help="where to write (default: at the end of --help)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--format", choices=DATA_FORMATS, help="the test set's format, as data.datasets[].format "
                        "(default: detected from the first row)")
    parser.add_argument("--columns", type=parse_columns, metavar="NAME=COLUMN,...",
                        help="the test set's column mapping, e.g. prompt=q,response=a (as data.datasets[].columns)")
    parser.add_argument("--system", help="system prompt for rows that carry none (default: the run's own, the "
                        "one it was trained with)")
    add_trust_remote_code(parser)


def parse_columns(text: str) -> dict:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(text)
    return {name.strip(): column.strip() for name, column in pairs}


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="CONFIG.yaml|TARGET",
                        help="a YAML config (evaluates its train.output_dir), or a run directory, model directory "
                             "or hub id")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. eval.none_answer=无 eval.tokenize=word")
    add_eval_flags(parser)
    parser.add_argument("--heldout", nargs="?", const="", metavar="FILE",
                        help="also measure perplexity on general text (default: the small set tunekit ships)")
    parser.epilog = ("output: --output, else eval.report_dir, else TARGET/eval for a run directory, "
                     "else eval/<name> in the current directory")


def eval_config(args, config_path: str | None) -> Config:
    """The config (YAML or defaults) with key=value overrides, then the flags, validated."""
    cfg = load_config(config_path, args.overrides)
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg.eval, key, value)
    validate(cfg)
    return cfg


def test_set(cfg: Config, args=None):
    """eval.test_data, else the first data.eval_datasets entry (a DatasetSpec, with its columns);
    --format / --columns / --system apply to it as they would in a config's data entry."""
    if cfg.eval.test_data:
        data = cfg.eval.test_data
    elif cfg.data.eval_datasets:
        data = cfg.data.eval_datasets[0]
    else:
        raise ConfigError("no test set: give --data FILE, or set eval.test_data (or data.eval_datasets) in the config")
    options = {key: getattr(args, key, None) for key in ("format", "columns", "system")}
    options = {key: value for key, value in options.items() if value}
    if not options:
        return data
    return dataclasses.replace(data if isinstance(data, DatasetSpec) else DatasetSpec(path=data), **options)


def run(args) -> int:
    from tunekit.eval.perplexity import heldout_text
    from tunekit.eval.predict import describe_target, evaluate_target, format_scores, score_answers, write_evaluation
    from tunekit.eval.preference import is_preference_file
    from tunekit.eval.tasks import load_task
    from tunekit.rundir import is_run_dir

    is_config = args.source.endswith(CONFIG_SUFFIXES)
    cfg = eval_config(args, args.source if is_config else None)
    target = cfg.train.output_dir if is_config else args.source
    if not target:
        raise ConfigError(f"{args.source} has no train.output_dir: say which run to evaluate")
    data = test_set(cfg, args)
    if is_preference_file(data):  # pairs: preference accuracy (tunekit.eval.preference)
        if cfg.eval.reward_model:
            raise ConfigError("--reward-model scores generated answers, and a test set of pairs is ranked, not "
                              "answered: give prompts as --data (or compare TARGETS --pairs FILE --reward-model RUN)")
        return _preference_eval(args, cfg, target, data)
    if cfg.eval.reward_model:
        check_reward_model(cfg.eval.reward_model)
    task = load_task(data, cfg.eval)
    heldout_file = args.heldout if args.heldout is not None else cfg.eval.heldout
    heldout = heldout_text(heldout_file or None) if heldout_file is not None else None
    label = Path(target).resolve().name if Path(target).exists() else str(target)
    out = Path(args.output or cfg.eval.report_dir or (Path(target) / "eval" if is_run_dir(target)
                                                      else Path("eval") / label))
    print(f"target: {target} ({describe_target(target)})")
    print(f"test set: {getattr(data, 'path', data)}\n{task.describe()}")
    evaluation = evaluate_target(target, task, label, heldout, args.heldout_tokens, progress=not args.quiet,
                                 trust_remote_code=args.trust_remote_code)
    if cfg.eval.reward_model:
        score_answers([evaluation], cfg.eval.reward_model)
    if evaluation.system_prompt:
        print(f"system prompt (the run's; --system overrides): {evaluation.system_prompt}")
    predictions, metrics = write_evaluation(out, evaluation, task, getattr(data, "path", data))
    print(format_scores(evaluation))
    print(f"predictions: {predictions}\nmetrics: {metrics}")
    return 0


def check_reward_model(path: str) -> None:
    """Refuse a --reward-model that is not a reward-model run now, before any answer is generated."""
    from tunekit.train.rewards import reward_model_run

    reward_model_run(path, what="--reward-model")


def _preference_eval(args, cfg: Config, target: str, data) -> int:
    from tunekit.eval.preference import evaluate_preferences
    from tunekit.rundir import is_run_dir

    out = Path(args.output or cfg.eval.report_dir or (Path(target) / "eval" if is_run_dir(target) else "eval"))
    record = evaluate_preferences(target, data, cfg, out)
    print(f"target: {target}\ntest set: {getattr(data, 'path', data)} ({record['pairs']} pairs)")
    for key in ("preference_accuracy", "implicit_reward_accuracy"):
        if key in record:
            print(f"{key}: {100 * record[key]:.1f}%")
    print(f"metrics: {out / 'metrics.json'}")
    return 0
