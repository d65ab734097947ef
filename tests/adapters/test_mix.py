"""tunekit mix and several adapters on one base: weights, switching, stacking, and refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunekit.cli import main
from tunekit.errors import TunekitError
from tunekit.model.multi import activate, adapter_names, combine, load_adapters
from tunekit.rundir import META_FILE


def logits(model, token_ids) -> torch.Tensor:
    with torch.no_grad():
        return model(**token_ids).logits


def with_plain_peft(base_dir, adapter_dir, token_ids) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return logits(PeftModel.from_pretrained(base, adapter_dir).eval(), token_ids)


def mix(*args) -> int:
    return main(["mix", *map(str, args)])


@pytest.mark.parametrize("combination, first", [("cat", "a"), ("linear", "a"), ("svd", "a"), ("cat", "b")])
def test_weights_one_and_zero_reproduce_the_first_adapter(lora_a, lora_b, tiny_model_dir, token_ids, tmp_path,
                                                           combination, first):
    """lora_b uses rsLoRA scaling: first in the list, it checks that the mix does not scale it again."""
    one, zero = (lora_a, lora_b) if first == "a" else (lora_b, lora_a)
    output = tmp_path / "mixed"
    assert mix(f"{one}:1", f"{zero}:0", "--output", output, "--combination", combination) == 0
    expected, got = (with_plain_peft(tiny_model_dir, run, token_ids) for run in (one, output))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    meta = json.loads((output / META_FILE).read_text())
    origin = meta["origin"]
    assert [m["weight"] for m in origin["mixed_from"]] == [1.0, 0.0] and origin["combination"] == combination
    assert meta["template"] == json.loads((one / META_FILE).read_text())["template"]
    assert (output / "chat_template.jinja").is_file() and (output / "tokenizer.json").is_file()


def test_a_blend_is_the_weighted_sum_of_the_adapters_deltas(lora_a, lora_b, tiny_model_dir, token_ids, tmp_path):
    """cat mixing is exact: the 0.7/0.3 blend equals peft's own stacking of 0.7 A + 0.3 B, and merges like a run."""
    output = tmp_path / "blend"
    assert mix(f"{lora_a}:0.7", f"{lora_b}:0.3", "--output", output) == 0
    got = with_plain_peft(tiny_model_dir, output, token_ids)
    from peft.tuners.lora import LoraLayer

    model, _ = load_adapters({"a": lora_a, "b": lora_b}, dtype="fp32")
    for name, weight in (("a", 0.7), ("b", 0.3)):
        for module in model.modules():
            if isinstance(module, LoraLayer) and name in module.scaling:
                module.scaling[name] *= weight
    activate(model, ["a", "b"])
    assert torch.allclose(got, logits(model, token_ids), atol=1e-4, rtol=1e-4)
    assert main(["merge", str(output), "--output", str(tmp_path / "merged"), "--dtype", "fp32"]) == 0


def test_several_adapters_switch_by_name_and_stack(lora_a, lora_b, tiny_model_dir, token_ids):
    model, _ = load_adapters({"a": lora_a, "b": lora_b}, dtype="fp32")
    assert adapter_names(model)[:2] == ["a", "b"]
    alone = {name: with_plain_peft(tiny_model_dir, run, token_ids) for name, run in (("a", lora_a), ("b", lora_b))}
    for name in ("b", "a"):
        activate(model, name)
        assert torch.allclose(logits(model, token_ids), alone[name], atol=1e-5)
    with model.disable_adapter():
        base = logits(model, token_ids)
    activate(model, ["a", "b"])
    stacked = logits(model, token_ids)
    combine(model, {"a": 1.0, "b": 1.0}, "both")
    activate(model, "both")
    assert torch.allclose(logits(model, token_ids), stacked, atol=1e-4)
    assert not torch.allclose(stacked, alone["a"], atol=1e-3) and not torch.allclose(stacked, base, atol=1e-3)
    with pytest.raises(TunekitError, match="no adapter named"):
        activate(model, "c")
    with pytest.raises(TunekitError, match="adapter name 'half' is not allowed"):  # nn.Module.half exists
        combine(model, {"a": 1.0}, "half")


def test_adapters_of_different_bases_are_refused(lora_a, lora_b, tmp_path, capsys):
    other = shutil.copytree(lora_b, tmp_path / "other-base")
    meta = json.loads((other / META_FILE).read_text())
    meta["base_model"] = "Qwen/Qwen2.5-7B-Instruct"
    (other / META_FILE).write_text(json.dumps(meta))
    assert mix(f"{lora_a}:0.5", f"{other}:0.5", "--output", tmp_path / "mixed") == 1
    err = capsys.readouterr().err
    assert "different base models" in err and "Qwen/Qwen2.5-7B-Instruct" in err
    assert not (tmp_path / "mixed").exists()


def test_an_adapter_of_incompatible_shapes_is_refused(lora_a, lora_b, tmp_path, capsys):
    broken = shutil.copytree(lora_b, tmp_path / "broken")
    weights = load_file(str(broken / "adapter_model.safetensors"))
    save_file({k: v[..., :32].contiguous() if "lora_A" in k else v for k, v in weights.items()},
              str(broken / "adapter_model.safetensors"))
    assert mix(f"{lora_a}:0.5", f"{broken}:0.5", "--output", tmp_path / "mixed") == 1
    err = capsys.readouterr().err
    assert f"the adapter in {broken} does not fit the base model" in err and "size mismatch" in err


def test_ranks_that_differ_are_refused_for_linear_and_accepted_by_cat(tiny_model_dir, tiny_lora_run, lora_a,
                                                                       tmp_path, capsys):
    config = json.loads((lora_a / "adapter_config.json").read_text())
    other = shutil.copytree(tiny_lora_run, tmp_path / "r8")
    other_config = json.loads((other / "adapter_config.json").read_text())
    assert config["r"] == other_config["r"] == 4
    weights = load_file(str(other / "adapter_model.safetensors"))  # double the rank: zero-padded, same delta
    save_file({k: torch.cat([v, torch.zeros_like(v)], dim=0 if "lora_A" in k else 1) for k, v in weights.items()},
              str(other / "adapter_model.safetensors"))
    (other / "adapter_config.json").write_text(json.dumps({**other_config, "r": 8, "lora_alpha": 32}))
    assert mix(f"{lora_a}:0.5", f"{other}:0.5", "--output", tmp_path / "linear", "--combination", "linear") == 1
    assert "needs adapters of the same rank" in capsys.readouterr().err
    assert mix(f"{lora_a}:0.5", f"{other}:0.5", "--output", tmp_path / "cat") == 0


@pytest.mark.parametrize("name, message", [("prefix", "cannot share a model with other adapters"),
                                           ("dora", "is a DoRA adapter")])
def test_non_lora_adapters_are_refused(example_run, lora_a, tmp_path, capsys, name, message):
    assert mix(f"{lora_a}:0.5", f"{example_run(name)}:0.5", "--output", tmp_path / "mixed") == 1
    assert message in capsys.readouterr().err


def test_bad_arguments_are_refused(lora_a, lora_b, tmp_path, capsys):
    assert mix(str(lora_a), "--output", tmp_path / "mixed") == 1
    assert "is not RUN_DIR:WEIGHT" in capsys.readouterr().err
    assert mix(f"{lora_a}:1", f"{lora_b}:1", "--output", tmp_path / "m", "--combination", "ties") == 1
    assert "needs --density" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert mix(f"{lora_a}:1", "--output", tmp_path / "exists") == 1
    assert "already exists" in capsys.readouterr().err
