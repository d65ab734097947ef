"""Generation metrics during training: prompts and references cut from the tokenized
validation rows, scores logged at every evaluation like the loss."""

import json

from helpers import make_config

from tunekit.train.eval_callback import last_answer

STOP = 9
IGNORE = -100


def test_last_answer_is_cut_at_the_last_labelled_run_without_its_end_of_turn():
    ids = [1, 2, 3, STOP, 4, 5, 6, 7, STOP, 0]
    labels = [IGNORE, IGNORE, 3, STOP, IGNORE, IGNORE, 6, 7, STOP, IGNORE]
    assert last_answer(ids, labels, {STOP}) == ([1, 2, 3, STOP, 4, 5], [6, 7])


def test_rows_without_a_complete_answer_or_without_a_prompt_are_skipped():
    assert last_answer([1, 2, 3], [IGNORE, IGNORE, 3], {STOP}) is None  # cut by cutoff_len: no end-of-turn
    assert last_answer([1, 2], [IGNORE, IGNORE], {STOP}) is None
    assert last_answer([1, 2, STOP], [1, 2, STOP], {STOP}) is None  # train_on_prompt: no prompt left


def test_training_logs_generation_metrics_at_every_evaluation(tiny_model_dir, tmp_path, cache_dir):
    from tunekit.train.run import train

    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir,
                      data={"val_size": 8}, train={"max_steps": 4, "eval_steps": 2},
                      eval={"during_training": True, "max_samples": 3, "max_new_tokens": 6, "predict_batch_size": 2})
    run_dir = train(cfg)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    generated = [r for r in records if "eval_entity_f1" in r]
    assert [r["step"] for r in generated] == [2, 4]
    assert all(0 <= r["eval_entity_f1"] <= 100 and "eval_entity_precision" in r for r in generated)
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 4]
