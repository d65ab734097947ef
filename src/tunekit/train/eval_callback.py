"""Generation metrics during training (eval.during_training): answer the validation split at
every evaluation and log the scores like the loss.

At each evaluation (every train.eval_steps, or each epoch) the model as it is at that step
answers the first eval.max_samples validation samples (64 when unset) greedily, and the
metrics (eval.metrics, else chosen from the references as `tunekit eval` does) are logged
as eval_<name> on the 0..100 scale: metrics.jsonl, tensorboard and the progress line get
them, and so do the evaluation's metrics (usable as metric_for_best_model).

Prompts and references come from the tokenized validation rows: the prompt is every token
before the last answer (exactly what training saw), the reference is the last answer's
labelled tokens without its end-of-turn. Rows whose answer was cut by cutoff_len are left
out. Generation is a greedy left-padded `generate` on the live model with the adapter
being trained left as it is (the inference backend would switch adapters and freeze
them), and the answer text comes from `Answer`, the code `tunekit chat` and `tunekit eval`
use, so answers end where they would there.
"""

from __future__ import annotations

import logging

import torch
from transformers import GenerationConfig, TrainerCallback

from tunekit.config import Config, EvalConfig
from tunekit.data.templates import IGNORE_INDEX, load_template
from tunekit.eval.metrics import score_generation
from tunekit.eval.tasks import choose_metrics, flat_scores
from tunekit.infer.answer import Answer
from tunekit.infer.target import stop_token_ids
from tunekit.model.padding import left_padded

log = logging.getLogger(__name__)
DEFAULT_SAMPLES = 64


def last_answer(input_ids: list[int], labels: list[int], stop_ids: set[int]) -> tuple[list[int], list[int]] | None:
    """(prompt ids, answer ids without its end-of-turn) of the last labelled run; None when the
    answer does not end in a stop token (cut by cutoff_len) or nothing precedes it."""
    end = max((i for i, label in enumerate(labels) if label != IGNORE_INDEX), default=None)
    if end is None or labels[end] not in stop_ids:
        return None
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    answer = list(labels[start: end + 1])
    while answer and answer[-1] in stop_ids:
        answer.pop()
    return (list(input_ids[:start]), answer) if start > 0 else None


class GenerationMetrics(TrainerCallback):
    def __init__(self, trainer, tokenizer, prompts: list[list[int]], references: list[str], stop_ids: list[int],
                 cfg: EvalConfig):
        self.trainer, self.tokenizer, self.prompts, self.references = trainer, tokenizer, prompts, references
        self.stop_ids, self.cfg = stop_ids, cfg
        self.metrics, reason = choose_metrics(references, cfg)
        log.info("generation metrics during training on %d validation samples: %s (%s)",
                 len(prompts), ", ".join(self.metrics), reason)

    @classmethod
    def for_run(cls, cfg: Config, trainer, tokenizer, eval_dataset) -> GenerationMetrics:
        template = load_template(tokenizer, cfg.model.template)
        stops = stop_token_ids(template, None, getattr(trainer.model, "generation_config", None))
        prompts, references = [], []
        for row in eval_dataset:
            found = last_answer(row["input_ids"], row["labels"], set(stops))
            if found is not None:
                prompts.append(found[0])
                references.append(tokenizer.decode(found[1], skip_special_tokens=True))
            if len(prompts) == (cfg.eval.max_samples or DEFAULT_SAMPLES):
                break
        return cls(trainer, tokenizer, prompts, references, stops, cfg.eval)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not state.is_world_process_zero or not self.prompts:
            return
        predictions = self.generate(model)
        _, summary = score_generation(predictions, self.references, self.metrics, tokenize=self.cfg.tokenize,
                                      normalize_text=self.cfg.normalize, none_answer=self.cfg.none_answer,
                                      sep=self.cfg.entity_sep)
        scores = {f"eval_{name}": round(value, 4) for name, value in flat_scores(summary).items()}
        if metrics is not None:
            metrics.update(scores)
        self.trainer.log(scores)

    def generate(self, model) -> list[str]:
        """Greedy answers of the model as it is now; its train/eval mode is restored after."""
        size, texts = self.cfg.predict_batch_size, []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(self.prompts), size):
                texts += [self._text(row) for row in self._generate_batch(model, self.prompts[start: start + size])]
        finally:
            model.train(was_training)
        return texts

    @torch.no_grad()
    def _generate_batch(self, model, prompts: list[list[int]]) -> list[list[int]]:
        pad = self.tokenizer.pad_token_id
        inputs, mask = left_padded(prompts, pad, model.device)
        config = GenerationConfig(max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                  eos_token_id=self.stop_ids, pad_token_id=pad)
        out = model.generate(input_ids=inputs, attention_mask=mask, generation_config=config)
        return [row[inputs.shape[1]:].tolist() for row in out]

    def _text(self, row: list[int]) -> str:
        answer = Answer(self.tokenizer, self.stop_ids, [], self.cfg.max_new_tokens)
        for token in row:
            answer.push(token)
            if answer.finish_reason:
                break
        answer.flush()
        return answer.text
