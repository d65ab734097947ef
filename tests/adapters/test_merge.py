"""tunekit merge: the merged model equals base + adapter, loads with plain transformers, and bad input is refused."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
import torch

from tunekit.cli import main
from tunekit.rundir import META_FILE

MESSAGES = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "我们昨天去昆明。"},
            {"role": "assistant", "content": "昆明_地名"}, {"role": "user", "content": "hello"}]


def logits(model, token_ids) -> torch.Tensor:
    with torch.no_grad():
        return model(**token_ids).logits


def base_and_adapter_logits(base_dir, run, token_ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), run).eval()
    with model.disable_adapter():
        base = logits(model, token_ids)
    return base, logits(model, token_ids)


def merge(run, output, *extra) -> int:
    return main(["merge", str(run), "--output", str(output), *extra])


def test_merged_lora_equals_base_plus_adapter_and_is_a_plain_model_dir(lora_a, tiny_model_dir, token_ids, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = tmp_path / "merged"
    assert merge(lora_a, output, "--dtype", "fp32") == 0
    base, expected = base_and_adapter_logits(tiny_model_dir, lora_a, token_ids)
    merged = AutoModelForCausalLM.from_pretrained(output).eval()
    assert merged.dtype == torch.float32 and "lora" not in " ".join(n for n, _ in merged.named_parameters())
    assert (expected - base).abs().max() > 1e-2  # the adapter matters, so equality below means something
    assert torch.allclose(logits(merged, token_ids), expected, atol=1e-5, rtol=1e-5)

    tokenizer, trained = AutoTokenizer.from_pretrained(output), AutoTokenizer.from_pretrained(lora_a)
    assert tokenizer.chat_template == (lora_a / "chat_template.jinja").read_text(encoding="utf-8")
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == \
        trained.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    stop_ids = json.loads((lora_a / META_FILE).read_text())["template"]["stop_token_ids"]
    assert stop_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    generation = json.loads((output / "generation_config.json").read_text())
    assert generation["eos_token_id"] in (stop_ids, stop_ids[0])
    assert generation["pad_token_id"] == tokenizer.pad_token_id
    meta = json.loads((output / META_FILE).read_text())
    assert meta["origin"]["merged_from"] == str(lora_a.resolve()) and meta["template"]["stop_token_ids"] == stop_ids
    assert list(output.glob("*.safetensors")) and not (output / "adapter_config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary directory left behind


def test_dora_run_merges_exactly(example_run, tiny_model_dir, token_ids, tmp_path):
    from transformers import AutoModelForCausalLM

    run = example_run("dora")
    assert merge(run, tmp_path / "merged", "--dtype", "fp32") == 0
    base, expected = base_and_adapter_logits(tiny_model_dir, run, token_ids)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert (expected - base).abs().max() > 1e-2
    assert torch.allclose(logits(merged, token_ids), expected, atol=1e-5, rtol=1e-5)


def test_qlora_run_merges_into_the_unquantized_base_and_says_so(example_run, tiny_model_dir, token_ids, tmp_path,
                                                                 capsys):
    from transformers import AutoModelForCausalLM

    run = example_run("qlora4")
    assert merge(run, tmp_path / "merged", "--dtype", "fp32") == 0
    assert "not into its quantized weights" in capsys.readouterr().out
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    _, expected = base_and_adapter_logits(tiny_model_dir, run, token_ids)  # the adapter on the fp32 base
    assert torch.allclose(logits(merged, token_ids), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["prefix", "ptuning"])
def test_prompt_runs_cannot_be_merged(example_run, tmp_path, capsys, name):
    assert merge(example_run(name), tmp_path / "merged") == 1
    err = capsys.readouterr().err
    assert f"is a '{name}' run" in err and "cannot be merged" in err
    assert not (tmp_path / "merged").exists()


def test_a_full_run_has_nothing_to_merge(tiny_model_dir, tmp_path, capsys):
    run = shutil.copytree(tiny_model_dir, tmp_path / "full-run")
    (run / META_FILE).write_text(json.dumps({"base_model": str(tiny_model_dir), "method": "full"}))
    assert merge(run, tmp_path / "merged") == 1
    err = capsys.readouterr().err
    assert "nothing to merge" in err and "already a complete model" in err


def test_a_folder_that_is_not_a_run_is_refused(tiny_model_dir, tmp_path, capsys):
    assert merge(tiny_model_dir, tmp_path / "merged") == 1
    assert "is not a finished tunekit run" in capsys.readouterr().err
    assert merge(tmp_path / "missing", tmp_path / "merged") == 1
    assert "is not a directory" in capsys.readouterr().err


def test_a_base_that_moved_is_named_and_can_be_given(lora_a, tiny_model_dir, tmp_path, capsys):
    run = shutil.copytree(lora_a, tmp_path / "run")
    meta = json.loads((run / META_FILE).read_text())
    meta["base_model"] = str(tmp_path / "moved-away")
    (run / META_FILE).write_text(json.dumps(meta))
    assert merge(run, tmp_path / "merged") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'moved-away'}" in err and "is not there" in err and "--base" in err
    assert merge(run, tmp_path / "merged", "--base", str(tiny_model_dir)) == 0


def test_an_existing_output_is_refused_unless_overwrite(lora_a, tmp_path, capsys):
    output = tmp_path / "merged"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    assert merge(lora_a, output) == 1
    assert "already exists" in capsys.readouterr().err and (output / "keep.txt").is_file()
    assert merge(lora_a, output, "--overwrite") == 0
    assert not (output / "keep.txt").exists() and (output / "config.json").is_file()
    assert merge(lora_a, lora_a, "--overwrite") == 1
    assert "would replace the input" in capsys.readouterr().err and (lora_a / "adapter_config.json").is_file()


def test_a_full_disk_while_writing_leaves_no_model_directory(lora_a, tmp_path, capsys, monkeypatch):
    import tunekit.export.merge as merge_module

    def disk_full(folder, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(merge_module, "write_record", disk_full)  # the last file of the output
    assert merge(lora_a, tmp_path / "merged") == 1
    assert "disk full while writing" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
