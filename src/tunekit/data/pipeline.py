"""Records -> tokenized dataset: batched tokenization, an on-disk cache, length statistics.

    data = prepare_data(cfg, tokenizer, template)   # PreparedData(train, eval, stats, ...)

The cache key is a hash of the data files' bytes, the dataset options, the tokenizer, the
template and the length options; a second run with the same inputs loads the Arrow files
instead of tokenizing again, and any changed input misses. A cache entry is written to a
temporary folder and renamed into place, so a crash never leaves half an entry. Under
torchrun / accelerate only the main process tokenizes; the others wait and read the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, load_from_disk

from tunekit.config import Config
from tunekit.data.formats import load_records, source_files
from tunekit.data.records import Conversation, Problem, TextRecord
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError
from tunekit.errors import DataError

CACHE_VERSION = "1"  # bump when the tokenized layout or the masking rules change
CHUNK = 1000  # conversations per tokenizer call


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset | None
    stats: dict
    problems: list[Problem] = field(default_factory=list)
    fingerprint: str = ""
    cache_hit: bool = False


def cache_root(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir or os.environ.get("TUNEKIT_CACHE") or Path.home() / ".cache" / "tunekit")


def prepare_data(cfg: Config, tokenizer, template: ChatTemplate | None) -> PreparedData:
    """Tokenized train (and eval) sets for cfg, from the cache when the inputs are unchanged."""
    train, stats, problems, key, hit = _cached(cfg, cfg.data.datasets, tokenizer, template)
    evaluation = None
    if cfg.data.eval_datasets:
        evaluation, *_ = _cached(cfg, cfg.data.eval_datasets, tokenizer, template)
    elif cfg.data.val_size > 0 and len(train) > 1:
        size = cfg.data.val_size if cfg.data.val_size < 1 else int(cfg.data.val_size)
        split = train.train_test_split(test_size=size, seed=cfg.train.seed)
        train, evaluation = split["train"], split["test"]
    return PreparedData(train, evaluation, stats, problems, key, hit)


def _cached(cfg: Config, specs, tokenizer, template):
    key = fingerprint(cfg, specs, tokenizer, template)
    path = cache_root(cfg) / "datasets" / key
    with _main_process_first():
        if not (path / "stats.json").is_file():
            dataset, stats, problems = tokenize(cfg, specs, tokenizer, template)
            _write_entry(path, dataset, stats, problems)
            hit = False
        else:
            hit = True
    dataset = load_from_disk(str(path / "dataset"))
    meta = json.loads((path / "stats.json").read_text(encoding="utf-8"))
    problems = [Problem(**p) for p in meta.pop("problems")]
    return dataset, meta, problems, key, hit


def _write_entry(path: Path, dataset: Dataset, stats: dict, problems: list[Problem]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        dataset.save_to_disk(str(tmp / "dataset"))
        meta = dict(stats, problems=[asdict(p) for p in problems])
        (tmp / "stats.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if path.exists():  # another writer won the race: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _main_process_first:
    """Under a distributed launch, rank 0 runs the block first; the others then read its cache."""

    def __enter__(self):
        self._ctx = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self._ctx = PartialState().main_process_first()
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


def fingerprint(cfg: Config, specs, tokenizer, template: ChatTemplate | None) -> str:
    """Hash of everything the tokenized data depends on."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    for spec in specs:
        h.update(json.dumps(asdict(spec), sort_keys=True).encode())
        for path in source_files(spec):
            h.update(str(path).encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    h.update(_tokenizer_identity(tokenizer).encode())
    if template is not None:
        h.update(template.source.encode())
        h.update(template.eot_text.encode())
    d = cfg.data
    h.update(json.dumps([cfg.train.stage, d.cutoff_len, d.train_on_prompt, d.mask_history]).encode())
    return h.hexdigest()[:20]


def _tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(body.encode()).hexdigest() + json.dumps(tokenizer.special_tokens_map, sort_keys=True)


def tokenize(cfg: Config, specs, tokenizer, template) -> tuple[Dataset, dict, list[Problem]]:
    """Read, convert and tokenize; returns the dataset, its statistics and the bad rows."""
    loaded = load_records(specs, cfg.train.stage)
    if not loaded.records:
        shown = "".join(f"\n  {p}" for p in loaded.problems[:10])
        more = f"\n  ... and {len(loaded.problems) - 10} more" if len(loaded.problems) > 10 else ""
        raise DataError("no usable rows in " + ", ".join(s.path for s in specs) + shown + more)
    if cfg.train.stage == "pt":
        dataset, stats = _tokenize_text(loaded.records, tokenizer, cfg.data.cutoff_len)
        problems = []
    else:
        dataset, stats, problems = _tokenize_conversations(loaded.records, template, cfg)
    stats.update(rows_read=loaded.rows_read, skipped=len(loaded.problems) + len(problems))
    return dataset, stats, loaded.problems + problems


def _tokenize_conversations(records: list[Conversation], template: ChatTemplate, cfg: Config):
    d = cfg.data
    ids_out, labels_out, lengths, problems = [], [], [], []
    truncated = answers_lost = 0
    for start in range(0, len(records), CHUNK):
        chunk = records[start: start + CHUNK]
        for conv, enc in zip(chunk, _encode_chunk(template, chunk, d.train_on_prompt, d.mask_history, problems)):
            if enc is None:
                continue
            lengths.append(len(enc.input_ids))
            ids, labels = enc.input_ids, enc.labels
            if len(ids) > d.cutoff_len:
                truncated += 1
                ids, labels = ids[: d.cutoff_len], labels[: d.cutoff_len]
                if all(label == IGNORE_INDEX for label in labels):
                    answers_lost += 1
                    continue
            ids_out.append(ids)
            labels_out.append(labels)
    if not ids_out and lengths:
        raise DataError(f"no sample fits data.cutoff_len={d.cutoff_len}: {answers_lost} lost their whole answer "
                        f"to truncation (median length {length_percentiles(lengths)['p50']} tokens); "
                        "raise data.cutoff_len")
    dataset = Dataset.from_dict({"input_ids": ids_out, "labels": labels_out})
    stats = dict(kept=len(ids_out), truncated=truncated, answers_lost=answers_lost, **length_percentiles(lengths))
    return dataset, stats, problems


def _encode_chunk(template, chunk, train_on_prompt, mask_history, problems):
    try:
        return template.encode_many(chunk, train_on_prompt, mask_history)
    except TemplateError:  # find the culprits one by one, keep the rest
        out = []
        for conv in chunk:
            try:
                out.append(template.encode(conv, train_on_prompt, mask_history))
            except TemplateError as exc:
                file, _, line = conv.source.rpartition(":")
                message = str(exc).split(": ", 1)[1] if conv.source and str(exc).startswith(conv.source) else str(exc)
                problems.append(Problem(file or conv.source, int(line) if line.isdigit() else 0, message))
                out.append(None)
        return out


def _tokenize_text(records: list[TextRecord], tokenizer, block: int):
    """Continued pretraining: documents joined with EOS and cut into blocks of `block` tokens."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no eos_token to put between documents: set one for stage pt")
    lengths, stream = [], []
    for start in range(0, len(records), CHUNK):
        texts = [r.text for r in records[start: start + CHUNK]]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            lengths.append(len(ids) + 1)
            stream.extend(ids)
            stream.append(eos)
    blocks = [stream[i: i + block] for i in range(0, len(stream), block)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:
        blocks.pop()
    dataset = Dataset.from_dict({"input_ids": blocks, "labels": blocks})
    stats = dict(kept=len(records), blocks=len(blocks), tokens=len(stream), truncated=0, answers_lost=0,
                 **length_percentiles(lengths))
    return dataset, stats


def length_percentiles(lengths: list[int]) -> dict:
    if not lengths:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    arr = np.asarray(lengths)
    return {"p50": int(np.percentile(arr, 50)), "p90": int(np.percentile(arr, 90)),
            "p99": int(np.percentile(arr, 99)), "max": int(arr.max())}
