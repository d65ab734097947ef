"""Config: YAML + overrides, unknown keys and contradictions refused with a fix, every shipped YAML loads."""

from pathlib import Path

import pytest

from helpers import ROOT

from tunekit.config import DatasetSpec, load_config
from tunekit.errors import ConfigError



def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "model: {name_or_path: m}\ndata: {datasets: [a.jsonl]}\ntrain: {output_dir: out}\n")
    cfg = load_config(path, ["train.learning_rate=1e-4", "max_steps=7", "method.lora_target=q_proj,v_proj",
                             "data.path=b.jsonl"])
    assert cfg.train.learning_rate == 1e-4 and cfg.train.max_steps == 7
    assert cfg.method.lora_target == "q_proj,v_proj"
    assert cfg.data.datasets == [DatasetSpec(path="b.jsonl")]


@pytest.mark.parametrize("text,overrides,message", [
    ("train: {learning_rte: 1}\n", [], "unknown key 'train.learning_rte' (did you mean 'learning_rate'?)"),
    ("trian: {}\n", [], "unknown config section 'trian' (did you mean 'train'?)"),
    ("", ["lerning_rate=1"], "no section has it (did you mean 'learning_rate'?)"),
    ("train: {batch_size: four}\n", [], "'train.batch_size' must be int, got 'four'"),
    ("method: {name: lorra}\n", [], "method.name is 'lorra' (did you mean 'lora'?)"),
    ("train: {resume: true, overwrite: true}\n", [], "resume and train.overwrite contradict"),
    ("method: {name: qlora, bits: 3}\n", [], "set method.bits: 4 or 8"),
    ("method: {dora: true, pissa: true}\n", [], "keep one"),
    ("train: {stage: pt}\ndata: {mask_history: true}\n", [], "stage pt trains every token"),
    ("data: {datasets: [{format: alpaca}]}\n", [], "has no 'path'"),
    ("model: [1]\n", [], "must be a mapping"),
    ("a: b: c\n", [], "not valid YAML"),
])
def test_bad_configs_name_the_key_and_the_fix(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), overrides)
    assert message in str(err.value)


def test_override_must_be_key_value(tmp_path):
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(write(tmp_path, ""), ["learning_rate"])


def test_relative_dataset_and_template_paths_resolve_against_the_yaml(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "t.jinja").write_text("x")
    cfg = load_config(write(tmp_path, "model: {template: t.jinja}\ndata: {datasets: [d.jsonl]}\n"))
    assert cfg.data.datasets[0].path == str(tmp_path / "d.jsonl")
    assert cfg.model.template == str(tmp_path / "t.jinja")


ALL_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads_and_shows_its_command(path):
    cfg = load_config(path)
    assert cfg.train.output_dir and cfg.data.datasets
    header = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    assert any("tunekit " in line for line in header), f"{path} header must show the command that runs it"
    for spec in cfg.data.datasets:
        assert Path(spec.path).exists(), f"{path}: dataset {spec.path} missing"
