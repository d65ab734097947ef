"""Records -> tokenized dataset: batched tokenization, an on-disk cache, length statistics.

    data = prepare_data(cfg, tokenizer, template)   # PreparedData(train, eval, stats, ...)

The cache key is a hash of the data files' bytes, the dataset options, the tokenizer, the
template and the length options; a second run with the same inputs loads the Arrow files
instead of tokenizing again, and any changed input misses. A cache entry is written to a
temporary folder and renamed into place, so a crash never leaves half an entry. Under
torchrun / accelerate only the main process tokenizes; the others wait and read the cache.

Conversations are tokenized in ranges, one batched fast-tokenizer call per range; with
`data.num_proc` > 1 the ranges go to that many forked worker processes (each with a
single-threaded tokenizer), and the result is the same as with one; on a small machine
one process is faster, as a batched call already runs the Rust tokenizer on every core
(docs/throughput.md). Ranges come back as flat arrays, from which the Arrow columns are
built. An sft dataset has the columns input_ids, labels and length (what the Trainer's
group_by_length sampler reads instead of measuring every row).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, load_from_disk
from datasets.table import InMemoryTable

from tunekit.config import Config
from tunekit.data.formats import load_records, source_files
from tunekit.data.records import Conversation, Problem, TextRecord
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError
from tunekit.errors import ConfigError, DataError, TunekitError, is_disk_full
from tunekit.processes import main_process_first

log = logging.getLogger(__name__)

CACHE_VERSION = "3"  # bump when the tokenized layout or the masking rules change
CHUNK = 1000  # conversations per tokenizer call, at most
MIN_CHUNK = 64  # ... and at least, when ranges are split for num_proc workers
TOKEN_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int64())), ("labels", pa.list_(pa.int64())),
                          ("length", pa.int64())])


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
        evaluation, _, eval_problems, *_ = _cached(cfg, cfg.data.eval_datasets, tokenizer, template)
        problems = problems + eval_problems
    elif cfg.data.val_size > 0:
        split = train.train_test_split(test_size=validation_rows(cfg.data.val_size, len(train)), seed=cfg.train.seed)
        train, evaluation = split["train"], split["test"]
    return PreparedData(train, evaluation, stats, problems, key, hit)


def validation_rows(val_size: float, samples: int) -> int:
    """data.val_size as a row count, refused when it would leave no training rows."""
    rows = int(val_size) if val_size >= 1 else math.ceil(val_size * samples)
    if rows >= samples:
        raise ConfigError(f"data.val_size is {val_size:g}, which holds out {rows} of the {samples} training "
                          "samples and leaves none to train on: give a smaller fraction (e.g. 0.05) or count")
    return rows


def _cached(cfg: Config, specs, tokenizer, template):
    key = fingerprint(cfg, specs, tokenizer, template)
    path = cache_root(cfg) / "datasets" / key
    with main_process_first():
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
    """Into `.KEY.PID.XXXX` beside the entry, then renamed; stale ones of dead writers are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent))
    try:
        dataset.save_to_disk(str(tmp / "dataset"))
        meta = dict(stats, problems=[asdict(p) for p in problems])
        (tmp / "stats.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        if path.exists():  # another writer won the race: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise TunekitError(f"disk full while writing the tokenized data to {path.parent}: nothing was kept; "
                               "free some space, or point data.cache_dir at a disk with room") from None
        raise


STALE_AFTER_S = 24 * 3600  # a temporary entry whose writer cannot be identified is removed after this


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete hidden `.KEY.PID.XXXX` folders left by killed writers (dead PID, or older than a day)."""
    removed = []
    for tmp in folder.glob(".*"):
        pid = tmp.name.split(".")[2] if tmp.name.count(".") >= 3 else ""
        alive = pid.isdigit() and _process_alive(int(pid))
        try:
            old = time.time() - tmp.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            continue
        if tmp.is_dir() and (not alive if pid.isdigit() else old):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    if removed:
        log.info("removed %d unfinished cache entries left by killed runs in %s", len(removed), folder)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    h.update(json.dumps([cfg.train.stage, d.cutoff_len, d.overlength, d.train_on_prompt, d.mask_history]).encode())
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
    job = (records, template, cfg.data)
    parts = _map_ranges(job, _ranges(len(records), cfg.data.num_proc), cfg.data.num_proc)
    table = pa.concat_tables([part.table() for part in parts]) if parts else TOKEN_SCHEMA.empty_table()
    lengths = [n for part in parts for n in part.lengths]
    answers_lost = sum(part.answers_lost for part in parts)
    dropped = sum(part.dropped for part in parts)
    if table.num_rows == 0 and lengths:
        raise DataError(f"no sample fits data.cutoff_len={cfg.data.cutoff_len}: {dropped} longer ones dropped, "
                        f"{answers_lost} lost their whole answer to truncation (median length "
                        f"{length_percentiles(lengths)['p50']} tokens); raise data.cutoff_len")
    stats = dict(kept=table.num_rows, overlength=cfg.data.overlength, dropped_overlength=dropped,
                 truncated=sum(part.truncated for part in parts), answers_lost=answers_lost,
                 **length_percentiles(lengths))
    return Dataset(InMemoryTable(table)), stats, [problem for part in parts for problem in part.problems]


@dataclass
class _Part:
    """One range of conversations tokenized: flat ids and labels, and each kept sample's length."""

    ids: np.ndarray
    labels: np.ndarray
    kept_lengths: np.ndarray
    lengths: list[int]  # before truncation, for the statistics
    truncated: int
    answers_lost: int
    dropped: int
    problems: list[Problem]

    def table(self) -> pa.Table:
        offsets = pa.array(np.concatenate([[0], np.cumsum(self.kept_lengths)]), pa.int32())
        columns = [pa.ListArray.from_arrays(offsets, pa.array(self.ids)),
                   pa.ListArray.from_arrays(offsets, pa.array(self.labels)), pa.array(self.kept_lengths)]
        return pa.Table.from_arrays(columns, schema=TOKEN_SCHEMA)


def _ranges(total: int, workers: int) -> list[tuple[int, int]]:
    """Index ranges of about CHUNK conversations, smaller so that `workers` processes share them evenly."""
    size = CHUNK if workers <= 1 else max(MIN_CHUNK, min(CHUNK, -(-total // (4 * workers))))
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _encode_range(job, start: int, end: int) -> _Part:
    records, template, d = job
    problems: list[Problem] = []
    ids_out, labels_out, lengths = [], [], []
    truncated = answers_lost = dropped = 0
    for enc in _encode_chunk(template, records[start:end], d.train_on_prompt, d.mask_history, problems):
        if enc is None:
            continue
        lengths.append(len(enc.input_ids))
        ids, labels = enc.input_ids, enc.labels
        if len(ids) > d.cutoff_len and d.overlength == "drop":
            dropped += 1
            continue
        if len(ids) > d.cutoff_len:
            truncated += 1
            ids, labels = ids[: d.cutoff_len], labels[: d.cutoff_len]
            if all(label == IGNORE_INDEX for label in labels):
                answers_lost += 1
                continue
        ids_out.append(ids)
        labels_out.append(labels)
    kept = np.array([len(ids) for ids in ids_out], dtype=np.int64)
    return _Part(_flat(ids_out, kept), _flat(labels_out, kept), kept, lengths, truncated, answers_lost, dropped,
                 problems)


def _flat(rows: list[list[int]], lengths: np.ndarray) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))


_WORKER_JOB = None  # what a worker process encodes ranges of; inherited through fork, never pickled


def _map_ranges(job, ranges: list[tuple[int, int]], workers: int) -> list[_Part]:
    """_encode_range over `ranges`, in order, in `workers` forked processes when there are several."""
    workers = min(workers, len(ranges))
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        log.warning("data.num_proc=%d needs the 'fork' start method, which this platform lacks: "
                    "tokenizing in one process", workers)
        workers = 1
    if workers <= 1:
        return [_encode_range(job, start, end) for start, end in ranges]
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=_start_worker, initargs=(job,)) as pool:
        return pool.starmap(_encode_in_worker, ranges, chunksize=1)


def _start_worker(job) -> None:
    global _WORKER_JOB
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _WORKER_JOB = job


def _encode_in_worker(start: int, end: int) -> _Part:
    return _encode_range(_WORKER_JOB, start, end)


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
