"""Logits at trained positions only (data/collate.py `trained_logits_only`) against every position,
on SmolLM2-135M-Instruct (models/, from `make model`): one forward+backward of 8 samples in bounded
packed rows, about 35% of each sample an untrained prompt, interleaved pairs, medians.

    .venv/bin/python bench/trained_logits.py [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import ROOT, THREADS, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    setup()
    import torch
    from transformers import AutoModelForCausalLM

    from tunekit.data.collate import PackedCollator, trained_logits_only

    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(ROOT / "models/SmolLM2-135M-Instruct", dtype=torch.float32)
    model.config.use_cache = False
    model.train()
    generator = torch.Generator().manual_seed(0)
    features = []
    for _ in range(8):
        length = int(torch.randint(150, 400, (1,), generator=generator))
        ids = torch.randint(0, model.config.vocab_size, (length,), generator=generator).tolist()
        prompt = int(length * 0.35)
        features.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    batch = PackedCollator(bounded_rows=True)(features)

    def step(trained_only: bool) -> tuple[float, float]:
        inputs = trained_logits_only(batch) if trained_only else dict(batch)
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        model.zero_grad()
        return time.perf_counter() - start, loss.item()

    step(False), step(True)  # warm-up
    every, trained, losses = [], [], set()
    load_before = os.getloadavg()[0]
    for _ in range(args.pairs):
        (a, la), (b, lb) = step(False), step(True)
        every.append(a), trained.append(b), losses.update({round(la, 4), round(lb, 4)})
    print(f"rows x width {tuple(batch['input_ids'].shape)}, trained labels {int((batch['labels'] != -100).sum())}; "
          f"every position {statistics.median(every):.2f} s, trained only {statistics.median(trained):.2f} s per "
          f"step: {statistics.median(every) / statistics.median(trained):.2f}x; losses {sorted(losses)}; "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
