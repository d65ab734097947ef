"""The board's parts without a browser: the config it writes, the data report, the curve, run states."""

import json
import re

import pytest
from helpers import NER_TRAIN

from tunekit.config import load_config
from tunekit.errors import TunekitError
from tunekit.serve.board import launch
from tunekit.serve.board_data import (
    Settings,
    board_config,
    check_data,
    config_yaml,
    length_histogram,
    loss_svg,
)
from tunekit.serve.jobs import STOPPED_MARK, Jobs, loss_points


def test_written_yaml_is_what_train_reads(tmp_path):
    s = Settings(model="m", data=str(NER_TRAIN), run_name="ner", method="lora", lora_r=4, lora_target="q_proj, v_proj",
                 learning_rate=1e-3, max_steps=7, cutoff_len=64, packing="off", save_steps=3)
    path = tmp_path / "ner.yaml"
    path.write_text(config_yaml(board_config(s, tmp_path / "runs")), encoding="utf-8")
    cfg = load_config(path)
    assert (cfg.method.lora_r, cfg.method.lora_target, cfg.data.packing) == (4, ["q_proj", "v_proj"], False)
    assert (cfg.train.max_steps, cfg.train.learning_rate, cfg.train.save_steps) == (7, 1e-3, 3)
    assert cfg.train.output_dir == str((tmp_path / "runs" / "ner").resolve())
    assert cfg.data.datasets[0].path == str(NER_TRAIN)
    full = board_config(Settings(model="m", data="d", method="full", packing="auto"), tmp_path)
    assert "lora_r" not in full["method"] and "packing" not in full["data"]


def test_data_report_names_format_problems_and_trained_spans(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d.jsonl"
    rows = [{"instruction": "say hi", "output": "hi"}, {"instruction": "say no"}, {"instruction": "x", "output": "yo"}]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    report = check_data(board_config(Settings(model=str(tiny_model_dir), data=str(data)), tmp_path / "runs"))
    assert report.formats == [f"{data}: alpaca"]
    assert len(report.problems) == 1 and report.problems[0].startswith(f"{data}:2:")
    trained = "".join(text for text, label in report.preview if label == "trained")
    assert trained == "hi<|im_end|>yo<|im_end|>"
    assert len(report.lengths) == 2


def test_histogram_counts_every_sample_once():
    lengths = [3, 4, 4, 10, 25, 25, 25]
    table = length_histogram(lengths, bins=4)
    assert table["samples"].sum() == len(lengths)
    for label, count in zip(table["tokens"], table["samples"]):
        low, high = map(int, label.split("-"))
        assert count == sum(low <= n <= high for n in lengths)


def test_curve_carries_each_point_and_scales_into_the_box():
    svg = loss_svg([(1, 2.0), (2, 1.5), (4, 1.0)], width=300, height=200)
    found = re.findall(r'cx="([\d.]+)" cy="([\d.]+)" r="2.5" data-step="(\d+)" data-loss="([\d.]+)"', svg)
    assert [(int(s), float(v)) for _, _, s, v in found] == [(1, 2.0), (2, 1.5), (4, 1.0)]
    xs, ys = [float(x) for x, *_ in found], [float(y) for _, y, *_ in found]
    assert xs == sorted(xs) and ys == sorted(ys)  # later steps to the right; lower loss lower on the page
    assert "no loss logged yet" in loss_svg([])


def test_states_come_from_the_files(tmp_path):
    jobs = Jobs(tmp_path)
    assert jobs.status("a").state == "not started"
    jobs.log_path("a").write_text("$ tunekit train a.yaml\nerror: data.cutoff_len is 2: give at least 8 tokens\n")
    status = jobs.status("a")
    assert status.state == "failed" and status.error.startswith("error: data.cutoff_len")
    jobs.log_path("a").write_text(f"$ tunekit train a.yaml\n 3/9 [00:01<00:02]\n{STOPPED_MARK}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "loss": 2.0}\n'
                                                 '{"step": 2, "loss": 2.5}\n{"step": 3, "lo')
    status = jobs.status("a")
    assert (status.state, status.step, status.total, status.loss) == ("stopped", 3, 9, 2.5)
    assert loss_points(tmp_path / "a") == [(1, 3.0), (2, 2.5)]  # a step logged again after resume: latest wins
    with pytest.raises(TunekitError, match="no config"):
        jobs.start("b")
    with pytest.raises(TunekitError, match="run name"):
        jobs.config_path("../x")


@pytest.mark.parametrize("where", [{"share": True}, {"host": "0.0.0.0"}])
def test_exposing_the_board_needs_a_password(tmp_path, where):
    with pytest.raises(TunekitError, match="--password"):
        launch(tmp_path, Settings(), **where)


def test_after_training_actions_run_the_commands_a_user_would_type(tiny_lora_run, tmp_path):
    import shutil

    from tunekit.rundir import read_run
    from tunekit.serve.board import Board

    shutil.copytree(tiny_lora_run, tmp_path / "runs" / "lora")
    board = Board(tmp_path / "runs")
    outputs = list(board.merge("lora"))
    assert outputs[0].startswith(f"$ tunekit merge {tmp_path / 'runs' / 'lora'} --output")
    assert "merged model:" in outputs[-1] and outputs[-1].endswith("(exit status 0)")
    assert not read_run(tmp_path / "runs" / "lora-merged").is_adapter
    assert [row[:3] for row in board.jobs.table()] == [["lora", "finished", "4"], ["lora-merged", "finished", "0"]]
