"""Streaming mode (`data.streaming: true`): samples read and tokenized on the fly, never ahead.

    train = streamed_samples(cfg, tokenizer, template, skip=samples_already_trained)

For data that should not be tokenized ahead (larger than the disk, or a hub dataset). The
rows come from the same readers as the tokenized path (formats.sources / read_source, hub
datasets included) and become the same samples: sft through the same template encode and
cutoff rule (so the same ids and masks), pt as EOS-joined documents cut into blocks. The
collator packs them as it packs tokenized data.

The result is a `datasets.IterableDataset` with one shard per process, so that under
accelerate each process takes its shard: process `part` of `parts` keeps the rows whose
index modulo `parts` is `part` (it reads every row, it tokenizes only its own). Rows pass a
shuffle buffer (seeded by train.seed, the part and the pass over the data) before they
are tokenized, so the order is reproducible; a resumed run skips the rows its checkpoint
had already trained on without tokenizing them, and continues with the next. The stream
repeats the data until the Trainer stops at train.max_steps. A bad row stops the run with
its FILE:LINE (`tunekit data check` lists them all) unless data.skip_bad_rows is true.
"""

from __future__ import annotations

import logging
import random
from typing import Iterator

from tunekit.config import Config
from tunekit.data.formats import read_source, sources
from tunekit.data.records import Problem
from tunekit.data.pipeline import fit_to_cutoff
from tunekit.data.templates import TemplateError
from tunekit.errors import DataError
from tunekit.processes import world_size

log = logging.getLogger(__name__)


def streamed_samples(cfg: Config, tokenizer, template, skip: int = 0):
    """An IterableDataset of {"input_ids", "labels"} for cfg's training data; `skip` samples of this
    process's stream are passed over (a resumed run)."""
    from datasets import IterableDataset

    parts = world_size()
    kwargs = {"cfg": cfg, "tokenizer": tokenizer, "template": template, "skip": skip, "parts": parts,
              "part": list(range(parts))}
    return IterableDataset.from_generator(_generate, gen_kwargs=kwargs)


def _generate(cfg: Config, tokenizer, template, skip: int, parts: int, part: list[int]):
    [part] = part  # accelerate gives each process one shard: one part
    samples = _samples(cfg, tokenizer, template, _shuffled_rows(cfg, parts, part))
    for index, sample in enumerate(samples):
        if index >= skip:
            yield sample


def _shuffled_rows(cfg: Config, parts: int, part: int) -> Iterator[object]:
    """This part's rows, endlessly (one pass after another), through a seeded shuffle buffer."""
    size = max(1, cfg.data.shuffle_buffer)
    for epoch in range(1_000_000):
        rng, buffer = random.Random(f"{cfg.train.seed}:{part}:{epoch}"), []
        for row in _rows(cfg, parts, part):
            buffer.append(row)
            if len(buffer) >= size:
                yield buffer.pop(rng.randrange(len(buffer)))
        rng.shuffle(buffer)
        yield from buffer


def _rows(cfg: Config, parts: int, part: int) -> Iterator[object]:
    """The records whose index modulo parts is part (every process reads every row)."""
    for index, record in enumerate(_records(cfg)):
        if index % parts == part:
            yield record


def _records(cfg: Config) -> Iterator[object]:
    """Every record of the training datasets in order (max_samples kept); a bad row stops the run."""
    stage = cfg.train.stage
    for spec in cfg.data.datasets:
        kept = 0
        for source in sources(spec, stage, streaming=True):
            limit = None if spec.max_samples is None else spec.max_samples - kept
            if limit == 0:
                break
            for item in read_source(source, spec, stage, limit):
                if isinstance(item, Problem):
                    if cfg.data.skip_bad_rows:
                        log.warning("skipping a bad row (data.skip_bad_rows): %s", item)
                        continue
                    raise DataError(f"{item} (streaming mode stops at a bad row: fix it, find them all first with "
                                    "tunekit data check, or set data.skip_bad_rows=true to train without them)")
                kept += 1
                yield item


def _samples(cfg: Config, tokenizer, template, records: Iterator[object]) -> Iterator[dict]:
    if cfg.train.stage == "pt":
        yield from _blocks(tokenizer, records, cfg.data.cutoff_len)
        return
    d = cfg.data
    for conv in records:
        try:
            samples = template.encode_samples(conv, d.train_on_prompt, d.mask_history)  # one per rewritten turn
        except TemplateError as exc:
            raise DataError(f"{exc} (streaming mode stops at a bad row)") from None
        for enc in samples:
            ids, labels, _ = fit_to_cutoff(enc.input_ids, enc.labels, d.cutoff_len, d.overlength)
            if ids is not None:  # dropped as over-long, or its whole answer truncated away: as when tokenized ahead
                yield {"input_ids": ids, "labels": labels}


def _blocks(tokenizer, records: Iterator[object], block: int) -> Iterator[dict]:
    """Documents joined with EOS, cut into blocks of `block` tokens as they come."""
    eos, stream = tokenizer.eos_token_id, []
    if eos is None:
        raise DataError("the tokenizer has no eos_token to put between documents: set one for stage pt")
    for record in records:
        stream += tokenizer(record.text, add_special_tokens=False)["input_ids"] + [eos]
        while len(stream) >= block:
            ids, stream = stream[:block], stream[block:]
            yield {"input_ids": ids, "labels": ids}
