"""Batched sampling filters (infer/batching.py): each row's temperature, top-k and top-p hold
inside a batch of rows with other settings, exactly as for that row alone."""

import torch

from tunekit.infer.batching import _probabilities
from tunekit.infer.params import GenerationParams as P


def test_each_row_keeps_its_own_filters_and_equals_itself_alone():
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0)) * 3
    params = [P(temperature=0.7), P(temperature=1.5, top_k=7), P(temperature=1.0, top_p=0.5),
              P(temperature=1.2, top_k=20, top_p=0.3), P(temperature=0.5, top_k=1)]
    together = _probabilities(logits, params)
    for row, p in enumerate(params):
        assert torch.equal(together[row], _probabilities(logits[row: row + 1], [p])[0])
    kept = (together > 0).sum(-1).tolist()
    assert kept[0] == 300 and kept[1] == 7 and kept[4] == 1
    assert 1 <= kept[3] <= 20
    before = logits[2].softmax(-1).sort(descending=True).values  # temperature 1
    assert before[: kept[2] - 1].sum() < 0.5 <= before[: kept[2]].sum()  # the smallest set reaching top_p
    assert torch.allclose(together.sum(-1), torch.ones(5))
