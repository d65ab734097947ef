"""Records -> tokenized dataset: streamed, sharded, on every core, cached per file, resumable.

    data = prepare_data(cfg, tokenizer, template)   # PreparedData(train, eval, stats, ...)

Each data file is read as a stream (formats.read_source) and cut into shards of at most
SHARD_ROWS rows or SHARD_CHARS characters of text. Each shard is tokenized on its own and
written as an Arrow file with a small JSON of its statistics and bad rows, so memory does
not grow with the data: the dataset is the shards' Arrow files, memory-mapped and joined.
Shards go to `data.num_proc` forked worker processes (default: every core; each with a
single-threaded tokenizer); a dataset of one shard is tokenized in the calling process,
where a batched call already runs the Rust tokenizer on every core.

The cache follows the files: every file has its own entry, keyed by its path and bytes,
the dataset options, the tokenizer, the template and the length options. A second run
loads the entries instead of tokenizing; a new or changed file costs only that file. A
shard is written to a temporary name and renamed, its JSON last, so a killed run resumes
at the first shard without one; `done.json` marks a finished file. Under torchrun /
accelerate only the main process tokenizes; the others say what they wait for, then read.

An sft dataset has the columns input_ids, labels and length (what the Trainer's
group_by_length sampler reads instead of measuring every row). A pt dataset joins each
shard's documents with EOS and cuts them into blocks of cutoff_len tokens; a shard's last
block may be shorter. Token-length statistics come from histograms, not lists.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets
from datasets.table import InMemoryTable

from tunekit.config import Config
from tunekit.data.formats import (
    FileSource,
    check_has_rows,
    empty_file_problem,
    read_source,
    sources,
)
from tunekit.data.progress import ProblemLog, Progress
from tunekit.data.records import Conversation, Problem
from tunekit.data.templates import IGNORE_INDEX, ChatTemplate, TemplateError
from tunekit.data.tokens import token_ids
from tunekit.errors import ConfigError, DataError, TunekitError, is_disk_full
from tunekit.processes import (
    is_distributed,
    is_main_process,
    main_process_first,
    process_alive,
)

log = logging.getLogger(__name__)

CACHE_VERSION = "5"  # bump when the tokenized layout or the masking rules change
SHARD_ROWS = 10_000  # rows per shard, at most ...
SHARD_CHARS = 4 << 20  # ... and characters of text per shard
BATCH = 1000  # rows per tokenizer call
SFT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("length", pa.int64())])
PT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])


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


def problems_folder(cfg: Config) -> Path:
    """Where lists of bad rows go: <fingerprint>.txt when complete, in-progress-PID.txt while found."""
    return cache_root(cfg) / "problems"


def prepare_data(cfg: Config, tokenizer, template: ChatTemplate | None, trained_samples: int = 0) -> PreparedData:
    """Tokenized train (and eval) sets for cfg, from the cache when the inputs are unchanged. With
    data.streaming the train set is a stream (tokenized as it is read) past `trained_samples` samples."""
    if cfg.data.streaming:
        from tunekit.data.stream import streamed_samples

        train = streamed_samples(cfg, tokenizer, template, skip=trained_samples)
        evaluation = _cached(cfg, cfg.data.eval_datasets, tokenizer, template)[0] if cfg.data.eval_datasets else None
        return PreparedData(train, evaluation, {"streaming": True})
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
    job = _Job(cfg.train.stage, tokenizer, template, cfg.data.cutoff_len, cfg.data.train_on_prompt,
               cfg.data.mask_history, cfg.data.overlength)
    if job.stage == "pt" and tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos_token to put between documents: set one for stage pt")
    base = _base_key(cfg, tokenizer, template)
    if is_distributed() and not is_main_process():
        print(f"rank {os.environ.get('RANK')}: waiting for the main process to tokenize the data into "
              f"{cache_root(cfg) / 'datasets'}", file=sys.stderr, flush=True)
    with main_process_first():
        entries, hit = _tokenize_all(cfg, specs, job, base)
    stats, problems = _summary(entries, job, specs)
    key = hashlib.sha256("".join(e.key for e in entries).encode()).hexdigest()[:20]
    return _assemble(entries), stats, problems, key, hit


# ---------------------------------------------------------------- cache keys


def _base_key(cfg: Config, tokenizer, template: ChatTemplate | None) -> str:
    """Hash of what every file's tokens depend on besides the file itself."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(_tokenizer_identity(tokenizer).encode())
    if template is not None:
        h.update(template.source.encode())
        h.update(template.eot_text.encode())
        h.update(json.dumps(template.options, sort_keys=True).encode())
    d = cfg.data
    h.update(json.dumps([cfg.train.stage, d.cutoff_len, d.overlength, d.train_on_prompt, d.mask_history,
                         SHARD_ROWS, SHARD_CHARS]).encode())
    return h.hexdigest()


def _entry_key(base: str, spec, source, limit: int | None) -> str:
    h = hashlib.sha256(base.encode())
    h.update(json.dumps([asdict(spec), source.name, limit], sort_keys=True).encode())
    if isinstance(source, FileSource):
        with open(source.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


def _tokenizer_identity(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(body.encode()).hexdigest() + json.dumps(tokenizer.special_tokens_map, sort_keys=True)


# ---------------------------------------------------------------- reading into shards


@dataclass
class _Job:
    """What a shard is tokenized with; inherited by forked workers, never pickled."""

    stage: str
    tokenizer: object
    template: ChatTemplate | None
    cutoff_len: int
    train_on_prompt: bool
    mask_history: bool
    overlength: str  # drop | truncate


@dataclass
class _Entry:
    """One file's (or hub dataset's) place in the cache."""

    spec: object
    key: str
    folder: Path
    meta: dict = field(default_factory=dict)  # done.json: shards, statistics, problems


@dataclass
class _Shard:
    index: int
    records: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0
    chars: int = 0


def _tokenize_all(cfg: Config, specs, job: _Job, base: str) -> tuple[list[_Entry], bool]:
    """Every file's entry, tokenizing the files whose entry is missing or unfinished."""
    root = cache_root(cfg) / "datasets"
    if root.is_dir():
        remove_stale_temporaries(root)
    units = [(spec, source) for spec in specs for source in sources(spec, job.stage)]
    total = sum(source.size for _, source in units)
    progress = Progress("tokenizing", total)
    found = ProblemLog(problems_folder(cfg), progress)
    entries, hit, done_bytes, rows = [], True, 0, 0
    with _Workers(job, cfg.data.num_proc, found.add) as workers:
        remaining: dict[int, int | None] = {}
        for spec, source in units:
            left = remaining.setdefault(id(spec), spec.max_samples)
            if left == 0:
                continue
            key = _entry_key(base, spec, source, left)
            entry = _Entry(spec, key, root / key)
            if not (entry.folder / "done.json").is_file():
                hit = False
                entry.meta = _read_file(source, spec, job, entry, left, workers, progress, (done_bytes, rows))
            else:
                entry.meta = json.loads((entry.folder / "done.json").read_text(encoding="utf-8"))
            entries.append(entry)
            done_bytes, rows = done_bytes + source.size, rows + entry.meta["rows_read"]
            if left is not None:
                remaining[id(spec)] = left - entry.meta["records"]
        workers.join()
    found.close()
    for entry in entries:
        if not entry.meta.get("done"):
            entry.meta = _finish_entry(entry)
    for spec in specs:
        mine = [e for e in entries if e.spec is spec]
        check_has_rows(spec, sum(e.meta["rows_read"] for e in mine), [p for e in mine for p in _problems(e)])
    progress.finish(rows, done_bytes)
    return entries, hit


def _read_file(source, spec, job: _Job, entry: _Entry, limit, workers: _Workers, progress, before) -> dict:
    """Read one file into shards; those already written by a killed run are skipped. Returns the
    reading-side facts; the shards' statistics are joined by _finish_entry once all are written."""
    entry.folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(entry.folder)
    done_bytes, rows_before = before
    finished = {int(p.stem.split("-")[1]) for p in entry.folder.glob("shard-*.json")}
    shard, rows, records = _Shard(0), 0, 0
    for item in read_source(source, spec, job.stage, limit):
        rows += 1
        if isinstance(item, Problem):
            shard.problems.append(item)
        else:
            shard.records.append(item.text if job.stage == "pt" else item)  # pt: only the text travels
            shard.chars += _chars(item)
            records += 1
        shard.rows += 1
        if shard.rows >= SHARD_ROWS or shard.chars >= SHARD_CHARS:
            workers.submit(entry.folder, shard, skip=shard.index in finished)
            shard = _Shard(shard.index + 1)
        if rows % 1000 == 0:
            progress.update(rows_before + rows, done_bytes + source.tell())
    last = shard.rows > 0 or shard.index == 0  # an empty file has one empty shard
    if last:
        workers.submit(entry.folder, shard, skip=shard.index in finished)
    return {"rows_read": rows, "records": records, "shards": shard.index + last,
            "empty": [asdict(empty_file_problem(source))] if rows == 0 else []}


def _remove_stale_temps(folder: Path) -> None:
    """Temporary files (.tmp-PID-NAME) left by processes that died; a live writer's are kept."""
    for temp in folder.glob(".tmp-*"):
        pid = temp.name.split("-")[1]
        if pid.isdigit() and not process_alive(int(pid)):
            temp.unlink(missing_ok=True)


STALE_AFTER_S = 24 * 3600  # a temporary entry whose writer cannot be identified is removed after this


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete hidden `.KEY.PID.XXXX` folders left by killed writers (dead PID, or older than a day)."""
    removed = []
    for tmp in folder.glob(".*"):
        pid = tmp.name.split(".")[2] if tmp.name.count(".") >= 3 else ""
        alive = pid.isdigit() and process_alive(int(pid))
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


def _chars(record) -> int:
    if isinstance(record, Conversation):
        return sum(len(m["content"]) for m in record.messages)
    return len(record.text)


def _finish_entry(entry: _Entry) -> dict:
    """Join the shards' statistics into done.json, which marks the file finished."""
    meta = dict(entry.meta, done=True, shard_files=[], lengths={}, problems=list(entry.meta["empty"]))
    lengths: Counter = Counter()
    totals: Counter = Counter()
    for index in range(entry.meta["shards"]):
        shard = json.loads((entry.folder / f"shard-{index:05d}.json").read_text(encoding="utf-8"))
        if shard["kept"]:
            meta["shard_files"].append(f"shard-{index:05d}.arrow")
        lengths.update({int(k): v for k, v in shard.pop("lengths").items()})
        meta["problems"] += shard.pop("problems")
        totals.update(shard)
    meta.update(totals, lengths={str(k): v for k, v in sorted(lengths.items())})
    _write_json(entry.folder / "done.json", meta)
    return meta


def _problems(entry: _Entry) -> list[Problem]:
    return [Problem(**p) for p in entry.meta["problems"]]


# ---------------------------------------------------------------- workers


class _Workers:
    """Shards tokenized in order of submission: in this process while there is only one, else in a pool
    of forked workers with a bounded number of shards in flight (so memory stays flat)."""

    def __init__(self, job: _Job, num_proc: int | None, found):
        self.job, self.count = job, num_proc or len(os.sched_getaffinity(0))
        self.found = found  # called with each finished shard's bad rows, as FILE:LINE lines
        self.held: tuple | None = None
        self.pool, self.flight = None, deque()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()

    def submit(self, folder: Path, shard: _Shard, skip: bool) -> None:
        if skip:
            return
        if self.pool is None and self.held is None and self.count > 1:
            self.held = (folder, shard)  # a second shard will start the pool
            return
        if self.pool is None and self.count > 1:
            self._start()
        if self.pool is None:
            self.found(_encode_shard(self.job, folder, shard))
            return
        while len(self.flight) >= 2 * self.count:
            self.found(self.flight.popleft().get())
        self.flight.append(self.pool.apply_async(_encode_in_worker, (folder, shard)))

    def join(self) -> None:
        if self.held is not None:
            self.found(_encode_shard(self.job, *self.held))
            self.held = None
        while self.flight:
            self.found(self.flight.popleft().get())

    def _start(self) -> None:
        if "fork" not in multiprocessing.get_all_start_methods():
            log.warning("tokenizing in one process: worker processes need the 'fork' start method")
            self.count = 1
            return
        context = multiprocessing.get_context("fork")
        _return_free_heap()
        gc.freeze()  # the workers' collector then leaves the inherited objects (and their pages) alone
        try:
            self.pool = context.Pool(self.count, initializer=_start_worker, initargs=(self.job,))
        finally:
            gc.unfreeze()
        folder, shard = self.held
        self.held = None
        self.flight.append(self.pool.apply_async(_encode_in_worker, (folder, shard)))


def _return_free_heap() -> None:
    """Hand the heap that loading freed back to the OS before forking (glibc keeps it otherwise:
    about 150 MB after a 128k-vocabulary tokenizer is built), so neither this process nor the
    workers that inherit its pages hold it. Nothing to do without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_WORKER_JOB: _Job | None = None  # set in each forked worker


def _start_worker(job: _Job) -> None:
    global _WORKER_JOB
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _WORKER_JOB = job


def _encode_in_worker(folder: Path, shard: _Shard) -> list[str]:
    return _encode_shard(_WORKER_JOB, folder, shard)


# ---------------------------------------------------------------- one shard -> Arrow file + JSON


def _encode_shard(job: _Job, folder: Path, shard: _Shard) -> list[str]:
    """Tokenize and write one shard; returns its bad rows as FILE:LINE lines."""
    try:
        return _write_shard(job, folder, shard)
    except OSError as exc:
        if is_disk_full(exc):
            raise TunekitError(f"disk full while writing the tokenized data to {folder}: the shards written so far "
                               "are kept and a rerun continues from them; free some space, or point "
                               "data.cache_dir at a disk with room") from None
        raise


def _write_shard(job: _Job, folder: Path, shard: _Shard) -> list[str]:
    if job.stage == "pt":
        table, stats, problems = _encode_text(job, shard.records)
    else:
        table, stats, problems = _encode_conversations(job, shard.records)
    name = f"shard-{shard.index:05d}"
    tmp = folder / f".tmp-{os.getpid()}-{name}.arrow"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=BATCH)
    tmp.rename(folder / f"{name}.arrow")
    problems = shard.problems + problems
    _write_json(folder / f"{name}.json", dict(stats, problems=[asdict(p) for p in problems], kept=table.num_rows))
    return [str(p) for p in problems]


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    tmp.rename(path)


def _encode_conversations(job: _Job, records: list[Conversation]):
    """A shard's samples as an Arrow table; each batch is flattened to int32 arrays as it is done,
    so the shard never holds Python lists of all its ids (a worker's memory stays small)."""
    problems: list[Problem] = []
    ids_parts, labels_parts, kept_parts, lengths = [], [], [], Counter()
    outcomes = Counter()
    for start in range(0, len(records), BATCH):
        ids_out, labels_out = [], []
        for samples in _encode_batch(job, records[start: start + BATCH], problems):
            if len(samples) > 1:  # one sample per turn the template rewrites: each repeats its history
                outcomes["split"] += 1
                outcomes["split_extra_tokens"] += sum(len(e.input_ids) for e in samples) - len(samples[-1].input_ids)
            for enc in samples:
                lengths[len(enc.input_ids)] += 1
                outcomes["sample_tokens"] += len(enc.input_ids)
                ids, labels, outcome = fit_to_cutoff(enc.input_ids, enc.labels, job.cutoff_len, job.overlength)
                outcomes[outcome] += 1
                if ids is not None:
                    ids_out.append(ids)
                    labels_out.append(labels)
        kept = np.fromiter(map(len, ids_out), dtype=np.int64, count=len(ids_out))
        ids_parts.append(_flat(ids_out, kept))
        labels_parts.append(_flat(labels_out, kept))
        kept_parts.append(kept)
    kept = _joined(kept_parts, np.int64)
    columns = [_lists(_joined(ids_parts), kept), _lists(_joined(labels_parts), kept), pa.array(kept)]
    stats = {"truncated": outcomes["truncated"] + outcomes["answer_lost"], "answers_lost": outcomes["answer_lost"],
             "dropped_overlength": outcomes["dropped"], "lengths": lengths,
             **{k: outcomes[k] for k in ("split", "split_extra_tokens", "sample_tokens")}}
    return pa.Table.from_arrays(columns, schema=SFT_SCHEMA), stats, problems


def _joined(parts: list[np.ndarray], dtype=np.int32) -> np.ndarray:
    """The parts end to end; an empty array of `dtype` when there are none (an empty shard)."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def fit_to_cutoff(ids: list[int], labels: list[int], cutoff_len: int, overlength: str):
    """(ids, labels, outcome) for one sample: the one rule for samples longer than cutoff_len.
    outcome is fits | dropped | truncated | answer_lost; ids is None when the sample is not trained."""
    if len(ids) <= cutoff_len:
        return ids, labels, "fits"
    if overlength == "drop":
        return None, None, "dropped"
    ids, labels = ids[:cutoff_len], labels[:cutoff_len]
    if all(label == IGNORE_INDEX for label in labels):
        return None, None, "answer_lost"
    return ids, labels, "truncated"


def _encode_batch(job: _Job, batch: list[Conversation], problems: list[Problem]):
    template = job.template
    try:
        return template.encode_many(batch, job.train_on_prompt, job.mask_history)
    except TemplateError:  # find the culprits one by one, keep the rest
        out = []
        for conv in batch:
            try:
                out.append(template.encode_samples(conv, job.train_on_prompt, job.mask_history))
            except TemplateError as exc:
                file, _, line = conv.source.rpartition(":")
                message = str(exc).split(": ", 1)[1] if conv.source and str(exc).startswith(conv.source) else str(exc)
                problems.append(Problem(file or conv.source, int(line) if line.isdigit() else 0, message))
                out.append([])
        return out


def _encode_text(job: _Job, records: list[str]):
    """Continued pretraining: the shard's documents joined with EOS and cut into blocks of cutoff_len."""
    eos, block = job.tokenizer.eos_token_id, job.cutoff_len
    pieces, lengths = [], Counter()
    for start in range(0, len(records), BATCH):
        rows = token_ids(job.tokenizer, records[start: start + BATCH])
        for ids in rows:
            ids.append(eos)
        sizes = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        lengths.update(sizes.tolist())
        flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(sizes.sum()))
        pieces.append(flat)
    stream = _joined(pieces)
    cuts = np.append(np.arange(0, len(stream), block), len(stream))
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < 2:  # a last block of one token teaches nothing
        cuts = cuts[:-1]
        stream = stream[: cuts[-1]]
    blocks = _lists(stream, np.diff(cuts))
    stats = {"truncated": 0, "answers_lost": 0, "lengths": lengths, "tokens": len(stream),
             "blocks": len(blocks)}
    return pa.Table.from_arrays([blocks, blocks], schema=PT_SCHEMA), stats, []


def _lists(values: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))


def _flat(rows: list[list[int]], lengths: np.ndarray) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum()))


# ---------------------------------------------------------------- entries -> dataset and report


def _assemble(entries: list[_Entry]) -> Dataset:
    parts = [Dataset.from_file(str(e.folder / name)) for e in entries for name in e.meta["shard_files"]]
    if not parts:
        return Dataset(InMemoryTable(SFT_SCHEMA.empty_table()))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _summary(entries: list[_Entry], job: _Job, specs) -> tuple[dict, list[Problem]]:
    """The whole dataset's statistics and bad rows; a dataset with nothing usable is refused here."""
    meta = [e.meta for e in entries]
    problems = [p for e in entries for p in _problems(e)]
    lengths = Counter()
    for m in meta:
        lengths.update({int(k): v for k, v in m["lengths"].items()})
    total = {k: sum(m.get(k, 0) for m in meta) for k in ("rows_read", "records", "kept", "truncated",
                                                         "answers_lost", "dropped_overlength", "tokens", "blocks",
                                                         "split", "split_extra_tokens", "sample_tokens")}
    if total["records"] == 0:
        shown = "".join(f"\n  {p}" for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError("no usable rows in " + ", ".join(s.path for s in specs) + shown + more)
    percentiles = histogram_percentiles(lengths)
    if total["kept"] == 0 and job.stage == "sft":
        raise DataError(f"no sample fits data.cutoff_len={job.cutoff_len}: {total['dropped_overlength']} longer "
                        f"ones dropped, {total['answers_lost']} lost their whole answer to truncation (median "
                        f"length {percentiles['p50']} tokens); raise data.cutoff_len")
    stats = dict(rows_read=total["rows_read"], kept=total["kept"] if job.stage == "sft" else total["records"],
                 skipped=len(problems), truncated=total["truncated"], answers_lost=total["answers_lost"],
                 **percentiles)
    if job.stage == "sft":
        stats.update(overlength=job.overlength, dropped_overlength=total["dropped_overlength"], split=total["split"],
                     split_extra_tokens=total["split_extra_tokens"], sample_tokens=total["sample_tokens"])
    if job.stage == "pt":
        stats.update(blocks=total["blocks"], tokens=total["tokens"])
    return stats, problems


def histogram_percentiles(counts: dict[int, int]) -> dict:
    """p50/p90/p99/max of the values a {value: count} histogram holds, as numpy's linear percentile."""
    if not counts:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0}
    values = np.array(sorted(counts), dtype=np.float64)
    ends = np.cumsum([counts[int(v)] for v in values])  # ends[i]: how many values are <= values[i]
    n = int(ends[-1])

    def at(rank: int) -> float:
        return values[int(np.searchsorted(ends, rank, side="right"))]

    out = {}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        position = q / 100 * (n - 1)
        low = int(np.floor(position))
        out[name] = int(at(low) + (at(min(low + 1, n - 1)) - at(low)) * (position - low))
    out["max"] = int(values[-1])
    return out


def length_percentiles(lengths: list[int]) -> dict:
    return histogram_percentiles(Counter(lengths))
