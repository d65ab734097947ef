"""GRPO rewards named in the config (align.rewards), each a function TRL calls per batch.

    funcs = reward_functions(["exact_match", "format:^\\d+$", "length:40", "mypkg.scores:fn", "runs/rm"])

  exact_match       1 when the completion equals the row's reference answer (stripped), else 0
  format:REGEX      1 when the whole completion (stripped) matches REGEX, else 0
  length:N          1 up to N characters, then N / length
  module:function   your function(prompts, completions, **columns) -> list of floats
  a run directory   a reward model trained with stage rm: the score of the conversation
                    (prompt messages + completion) rendered with the reward model's template

TRL passes the completions as decoded text (special tokens, i.e. the end-of-turn, left out)
and every dataset column as a keyword list: `answer` (the reference, '' when none) and
`messages` (the prompt as JSON).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Callable

from tunekit.errors import ConfigError


def reward_functions(specs: list[str]) -> list[Callable]:
    return [_one(str(spec)) for spec in specs]


def _one(spec: str) -> Callable:
    name, _, arg = spec.partition(":")
    if name in BUILTINS and (arg or name == "exact_match"):
        return _named(BUILTINS[name](arg), spec)
    if Path(spec).is_dir():
        return _named(RewardModelScore(spec), f"rm:{Path(spec).name}")
    if ":" in spec and re.fullmatch(r"[\w.]+:\w+", spec):
        return _named(_imported(spec), spec)
    raise ConfigError(f"align.rewards entry '{spec}' is not a reward: use exact_match, format:REGEX, length:N, "
                      "module:function, or the run directory of a reward model (stage rm)")


def _named(func: Callable, name: str) -> Callable:
    def reward(prompts, completions, **columns):
        return [float(x) for x in func(prompts, completions, **columns)]
    reward.__name__ = name  # TRL logs each reward under its function's name
    return reward


def exact_match(_: str) -> Callable:
    def score(prompts, completions, answer=None, **_):
        if answer is None:
            raise ConfigError("reward exact_match needs a reference answer column (answer) in the prompts data")
        return [float(c.strip() == a.strip()) for c, a in zip(completions, answer)]
    return score


def format_regex(pattern: str) -> Callable:
    try:
        regex = re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ConfigError(f"align.rewards format:{pattern}: not a regular expression ({exc})") from None
    return lambda prompts, completions, **_: [float(bool(regex.fullmatch(c.strip()))) for c in completions]


def length(limit: str) -> Callable:
    if not limit.isdigit() or int(limit) < 1:
        raise ConfigError(f"align.rewards length:{limit}: give a positive number of characters, e.g. length:200")
    n = int(limit)
    return lambda prompts, completions, **_: [min(1.0, n / max(len(c), 1)) for c in completions]


BUILTINS = {"exact_match": exact_match, "format": format_regex, "length": length}


def _imported(spec: str) -> Callable:
    module, name = spec.split(":")
    try:
        func = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"align.rewards {spec}: cannot import it ({exc}); give module:function of an "
                          "importable module") from None
    return lambda prompts, completions, **columns: func(prompts=prompts, completions=completions, **columns)


def reward_model_run(run_dir: str, what: str = "align.rewards"):
    """The Run of a reward-model run directory; a clear ConfigError for anything else."""
    from tunekit.rundir import is_run_dir, read_run

    if not is_run_dir(run_dir):
        raise ConfigError(f"{what} {run_dir} is not a run directory: give the output of a reward-model run "
                          "(train.stage: rm)")
    run = read_run(run_dir)
    if run.record.stage != "rm":
        raise ConfigError(f"{what} {run_dir} is a '{run.record.stage}' run, not a reward model "
                          "(train one with train.stage: rm)")
    return run


class RewardModelScore:
    """Scores with a reward-model run: prompt messages + the completion, rendered by its template.
    Also what `tunekit eval` / `compare --reward-model` score generated answers with."""

    def __init__(self, run_dir: str, what: str = "align.rewards"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from tunekit.infer.target import chat_template

        run = reward_model_run(run_dir, what)
        self.tokenizer = AutoTokenizer.from_pretrained(run_dir)
        self.template = chat_template(self.tokenizer, run)
        self.model = AutoModelForSequenceClassification.from_pretrained(run_dir, dtype=torch.float32).eval()

    def __call__(self, prompts, completions, messages=None, **_):
        return self.score_answers([json.loads(m) for m in messages], completions)

    def score_answers(self, prompts: list[list[dict]], answers: list[str]) -> list[float]:
        """The score of each prompt (messages) answered by its answer."""
        from tunekit.data.records import Conversation
        from tunekit.eval.preference import classifier_scores

        convs = [Conversation(m + [{"role": "assistant", "content": a}]) for m, a in zip(prompts, answers)]
        samples = self.template.encode_many(convs, mask_history=True)
        return classifier_scores(self.model, [each[-1].input_ids for each in samples])
