"""Preference accuracy on held-out pairs: does the model rank the chosen answer above the rejected one?

    scores = preference_scores(model, rows)      # rows: prompt_ids / chosen_ids / rejected_ids (data.align_data)
    scores.accuracy, scores.implicit_accuracy    # log-likelihood ranking; DPO's implicit reward ranking
    pairs = HeldOutPairs(spec, cfg); scores, skipped = pairs.score(model, template)   # eval and compare

A causal LM ranks a pair by the summed log-probability of each completion (answer + end-of-
turn) after the prompt. A LoRA policy is also ranked by its implicit reward, as DPO defines
it: log pi(y|x) - log pi_ref(y|x) with the reference = the same model with its adapter
disabled; accuracy is the fraction of pairs whose chosen reward is higher, the margin the
mean difference. A reward model (sequence classification) ranks by its score of the whole
rendered conversation.

`tunekit eval` scores one target this way; `tunekit compare` scores every target on the same
pairs and takes the first target (the base) as the reference of the implicit reward, so a
full fine-tuning run gets one too (tunekit.eval.compare).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class PreferenceScores:
    chosen: list[float]
    rejected: list[float]
    chosen_ref: list[float] | None = None
    rejected_ref: list[float] | None = None

    @property
    def accuracy(self) -> float:
        return _fraction_above(self.chosen, self.rejected)

    @property
    def margin(self) -> float:
        return sum(c - r for c, r in zip(self.chosen, self.rejected)) / len(self.chosen)

    @property
    def implicit_accuracy(self) -> float | None:
        if self.chosen_ref is None:
            return None
        return _fraction_above(_minus(self.chosen, self.chosen_ref), _minus(self.rejected, self.rejected_ref))

    def record(self) -> dict:
        out = {"pairs": len(self.chosen), "preference_accuracy": self.accuracy, "logp_margin": self.margin}
        if self.chosen_ref is not None:
            out["implicit_reward_accuracy"] = self.implicit_accuracy
            out["implicit_reward_margin"] = sum(_minus(_minus(self.chosen, self.chosen_ref),
                                                       _minus(self.rejected, self.rejected_ref))) / len(self.chosen)
        return out


def _fraction_above(a: list[float], b: list[float]) -> float:
    return sum(x > y for x, y in zip(a, b)) / len(a)


def _minus(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b)]


def preference_scores(model, rows, batch_size: int = 16, reference: bool = True) -> PreferenceScores:
    """Scores of each pair: completion log-likelihoods (causal LM) or reward scores (classifier);
    reference=True: a model with an adapter is also scored with it disabled (the implicit reward)."""
    if _is_classifier(model):
        return PreferenceScores(_classifier_scores(model, rows, "chosen", batch_size),
                                _classifier_scores(model, rows, "rejected", batch_size))
    scores = PreferenceScores(completion_logps(model, rows, "chosen", batch_size),
                              completion_logps(model, rows, "rejected", batch_size))
    if reference and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            scores.chosen_ref = completion_logps(model, rows, "chosen", batch_size)
            scores.rejected_ref = completion_logps(model, rows, "rejected", batch_size)
    return scores


def _is_classifier(model) -> bool:
    return type(getattr(model, "base_model", model)).__name__.endswith("ForSequenceClassification") or \
        type(model).__name__.endswith("ForSequenceClassification")


def _batches(rows, size: int):
    rows = list(rows)
    for start in range(0, len(rows), size):
        yield rows[start: start + size]


def _padded(sequences: list[list[int]], pad: int):
    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    return ids, mask


@torch.no_grad()
def completion_logps(model, rows, which: str, batch_size: int = 16) -> list[float]:
    """Summed log-probability of each row's `which` completion after its prompt."""
    out = []
    device = next(model.parameters()).device
    for batch in _batches(rows, batch_size):
        sequences = [list(r["prompt_ids"]) + list(r[f"{which}_ids"]) for r in batch]
        ids, mask = _padded(sequences, 0)
        logps = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for i, row in enumerate(batch):
            start, end = len(row["prompt_ids"]), len(sequences[i])
            targets = ids[i, start:end].to(device)
            out.append(logps[i, start - 1: end - 1].gather(-1, targets[:, None]).sum().item())
    return out


def _classifier_scores(model, rows, which: str, batch_size: int) -> list[float]:
    sequences = [list(r.get("prompt_ids", [])) + list(r[f"{which}_ids"]) for r in rows]
    return classifier_scores(model, sequences, batch_size)


@torch.no_grad()
def classifier_scores(model, sequences: list[list[int]], batch_size: int = 16) -> list[float]:
    """A reward model's score of each token sequence (a whole rendered conversation)."""
    out = []
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None) or 0
    for batch in _batches(sequences, batch_size):
        ids, mask = _padded(batch, pad)
        out += model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().tolist()
    return out


# ---------------------------------------------------------------- tunekit eval TARGET --data PAIRS


def is_preference_file(path) -> bool:
    """A test set of pairs: its first row has chosen and rejected."""
    from tunekit.config import DatasetSpec
    from tunekit.data.formats import FileSource, source_files

    spec = path if isinstance(path, DatasetSpec) else DatasetSpec(str(path))
    files = source_files(spec) if Path(spec.path).exists() else []
    if not files:
        return False
    for _, row, _ in FileSource(files[0]).rows():
        return isinstance(row, dict) and "chosen" in row and "rejected" in row
    return False


def load_scorer(target: str):
    """(model, template) of a run directory, model directory or reward model; a LoRA run keeps its
    adapter (disabled for the implicit reward's reference)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from tunekit.infer.target import chat_template, resolve_target

    resolved = resolve_target(target)
    tokenizer = AutoTokenizer.from_pretrained(resolved.tokenizer_path)
    template = chat_template(tokenizer, resolved.run)
    if resolved.run is not None and resolved.run.record.stage == "rm":
        return AutoModelForSequenceClassification.from_pretrained(resolved.model_path).eval(), template
    if resolved.adapter_path is not None:
        from tunekit.model.multi import load_adapters

        model, _ = load_adapters([resolved.adapter_path], dtype="fp32")
        return model.eval(), template
    return AutoModelForCausalLM.from_pretrained(resolved.model_path,
                                                trust_remote_code=resolved.trust_remote_code).eval(), template


@dataclass
class HeldOutPairs:
    """Held-out pairs, rendered for each model by that model's own template (as its training did)."""

    data: object  # a path or a DatasetSpec
    cfg: object  # Config: data.cutoff_len, align.max_prompt_len, eval.max_samples

    @property
    def path(self) -> str:
        return str(getattr(self.data, "path", self.data))

    def rows(self, template, layout: str = "prompt"):
        """(rows, skipped): prompt / completion ids, and how many pairs could not be rendered."""
        from tunekit.config import DatasetSpec
        from tunekit.data.align_data import build_dataset

        spec = self.data if isinstance(self.data, DatasetSpec) else DatasetSpec(str(self.data))
        if self.cfg.eval.max_samples:
            spec = dataclasses.replace(spec, max_samples=self.cfg.eval.max_samples)
        rows, _, problems = build_dataset(self.cfg, [spec], template, "pairs", layout)
        return rows, len(problems)

    def score(self, model, template, reference: bool = True) -> tuple[PreferenceScores, int]:
        """(scores, skipped) of `model` on the pairs; see preference_scores."""
        rows, skipped = self.rows(template, "joined" if _is_classifier(model) else "prompt")
        return preference_scores(model, rows, reference=reference), skipped


def evaluate_preferences(target: str, data, cfg, out_dir) -> dict:
    """Preference accuracy of `target` on the pairs in `data`; writes metrics.json into out_dir."""
    from tunekit.rundir import write_json_atomic

    model, template = load_scorer(target)
    pairs = HeldOutPairs(data, cfg)
    scores, skipped = pairs.score(model, template)
    record = {"target": str(target), "test_data": pairs.path, "skipped": skipped, **scores.record()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", record)
    return record
