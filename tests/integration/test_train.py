"""Training end to end on tiny models: what changed, what did not, what the run directory holds."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_config
from safetensors.torch import load_file

from tunekit.cli import main
from tunekit.errors import ConfigError, TunekitError
from tunekit.train.run import train



def base_state(model_dir):
    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_lora_run_directory_describes_itself_and_loads_with_plain_peft(tiny_lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tiny_lora_run
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja",
                 "metrics.jsonl", "loss.png", "tunekit.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "tunekit.json").read_text())
    assert meta["base_model"] == str(Path(tiny_model_dir).resolve())
    assert meta["method"] == "lora" and meta["stage"] == "sft" and meta["steps"] == 4
    assert meta["template"]["eot_text"] == "<|im_end|>"
    tokenizer = AutoTokenizer.from_pretrained(run)
    assert meta["template"]["stop_token_ids"] == [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert set(meta["versions"]) >= {"torch", "transformers", "peft", "datasets"}
    assert len(meta["data_fingerprint"]) == 20
    assert tokenizer.chat_template == (run / "chat_template.jinja").read_text()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, run)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: training moved it
    wrapped = model.get_base_model().state_dict()
    for name, tensor in base_state(tiny_model_dir).items():  # the base weights were not touched
        module, _, leaf = name.rpartition(".")
        key = name if name in wrapped else f"{module}.base_layer.{leaf}"
        assert torch.equal(wrapped[key], tensor), name
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)


def test_freeze_trains_only_the_last_layers(tiny_model_dir, tmp_path, cache_dir):
    run = train(make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "freeze",
                                                                              "freeze_trainable_layers": 1}))
    before, after = base_state(tiny_model_dir), load_file(str(run / "model.safetensors"))
    last = max(int(n.split(".")[2]) for n in before if n.startswith("model.layers."))
    for name, tensor in before.items():
        changed = not torch.equal(tensor, after[name])
        in_last = name.startswith(f"model.layers.{last}.")
        assert changed == in_last or (in_last and "norm" in name), name


def test_full_with_gradient_checkpointing_trains_every_weight(tiny_model_dir, tmp_path, cache_dir):
    run = train(make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "full"},
                            train={"gradient_checkpointing": True, "max_steps": 2}))
    before, after = base_state(tiny_model_dir), load_file(str(run / "model.safetensors"))
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert unchanged == []


def test_lora_with_gradient_checkpointing_has_grads(tiny_model_dir, tmp_path, cache_dir):
    run = train(make_config(tiny_model_dir, tmp_path / "run", cache_dir,
                            method={"name": "lora", "lora_target": "q_proj,v_proj"},
                            train={"gradient_checkpointing": True, "max_steps": 2}))
    weights = load_file(str(run / "adapter_model.safetensors"))
    assert weights and all("q_proj" in n or "v_proj" in n for n in weights)
    assert any(t.abs().sum() > 0 for n, t in weights.items() if "lora_B" in n)


def test_resume_continues_from_the_last_complete_checkpoint(tiny_model_dir, tmp_path, cache_dir):
    out = tmp_path / "run"
    train(make_config(tiny_model_dir, out, cache_dir, train={"max_steps": 2, "save_steps": 2}))
    (out / "tunekit.json").unlink()  # as if the run had been killed after its checkpoint
    broken = out / "checkpoints" / "checkpoint-9"  # a checkpoint cut off mid-write: no trainer_state.json
    broken.mkdir()
    train(make_config(tiny_model_dir, out, cache_dir, train={"max_steps": 4, "save_steps": 2, "resume": True}))
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # steps 3-4 came after the resumed checkpoint-2, not from scratch
    assert json.loads((out / "tunekit.json").read_text())["steps"] == 4


def test_existing_run_directory_is_refused(tiny_lora_run, tiny_model_dir, cache_dir):
    with pytest.raises(ConfigError, match="already exists.*train.resume=true.*train.overwrite=true"):
        train(make_config(tiny_model_dir, tiny_lora_run, cache_dir))


def test_nan_loss_stops_with_a_fix(tiny_model_dir, tmp_path, cache_dir):
    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "full"},
                      train={"learning_rate": 1e30, "max_grad_norm": 0.0, "max_steps": 6, "optim": "sgd"})
    with pytest.raises(TunekitError, match="loss became (nan|inf).*learning_rate"):
        train(cfg)
    assert not (tmp_path / "run" / "tunekit.json").exists()


def test_pretraining_joins_documents_with_eos_into_blocks(tiny_model_dir, tmp_path, cache_dir):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "a.csv").write_text("id,sentence\n1,The quick brown fox.\n2,Jumps over the dog.\n")
    (folder / "b.csv").write_text("id,sentence\n3,北京是中国的首都。\n")
    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "full"},
                      data={"datasets": [{"path": str(folder), "columns": {"text": "sentence"}}], "cutoff_len": 8},
                      train={"stage": "pt", "max_steps": 2, "batch_size": 2})
    from transformers import AutoTokenizer

    from tunekit.data.pipeline import prepare_data

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = prepare_data(cfg, tok, None)
    stream = [t for row in data.train["input_ids"] for t in row]
    docs = ["The quick brown fox.", "Jumps over the dog.", "北京是中国的首都。"]
    expected = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert stream == expected
    blocks = []  # blocks are cut within a file (a shard of it): each file's last block may be shorter
    for file_docs in (docs[:2], docs[2:]):
        ids = [t for d in file_docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
        blocks += [ids[i: i + 8] for i in range(0, len(ids), 8)]
    assert data.train["input_ids"] == blocks
    assert data.train["labels"] == data.train["input_ids"]
    assert (train(cfg) / "tunekit.json").is_file()


def test_extended_vocabulary_resizes_embeddings(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunekit.config import ModelConfig
    from tunekit.model.load import load_model

    model_dir = tmp_path / "extended"
    shutil.copytree(tiny_model_dir, model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.add_tokens([f"新词{i}" for i in range(100)])
    tok.save_pretrained(model_dir)
    model = load_model(ModelConfig(name_or_path=str(model_dir)), tok)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_remote_code_model_needs_the_opt_in(remote_code_model, tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="set model.trust_remote_code: true"):
        train(make_config(remote_code_model, tmp_path / "run", cache_dir))


def test_lora_on_a_fused_projection_with_remote_code(remote_code_model, tmp_path, cache_dir, capsys):
    assert main(["modules", str(remote_code_model), "--trust-remote-code"]) == 0
    listing = capsys.readouterr().out
    assert "attention  dense, query_key_value" in listing and "output     output_layer" in listing
    run = train(make_config(remote_code_model, tmp_path / "run", cache_dir,
                            model={"trust_remote_code": True}, method={"lora_target": ["query_key_value"]}))
    weights = load_file(str(run / "adapter_model.safetensors"))
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in weights} == {"query_key_value"}
    assert any(t.abs().sum() > 0 for n, t in weights.items() if "lora_B" in n)


def test_train_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{name_or_path: {tmp_path / 'no-model'}}}\ndata: {{datasets: [x.jsonl]}}\n"
                   f"train: {{output_dir: {tmp_path / 'run'}}}\n")
    assert main(["train", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_the_trainer_projects_only_trained_positions_with_the_same_loss(tiny_model_dir, tmp_path, cache_dir):
    """build_trainer's Trainer asks a transformers model for logits at trained positions only; the
    loss of a batch is the one the model gives with every position projected."""
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer
    from tunekit.train.run import build_model, build_trainer

    cfg = make_config(tiny_model_dir, tmp_path / "run", cache_dir, method={"name": "lora", "lora_r": 4})
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tokenizer, load_template(tokenizer, cfg.model.template))
    trainer, _ = build_trainer(cfg, build_model(cfg, tokenizer), tokenizer, data, tmp_path / "run")
    batch = trainer.data_collator([data.train[i] for i in range(8)])
    trained = int((batch["labels"][:, 1:] != -100).sum())

    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
        everywhere = trainer.model(**batch)

    assert trainer.logits_at_trained_positions
    assert outputs.logits.shape[0] == trained < everywhere.logits.shape[:2].numel()
    assert torch.allclose(loss, everywhere.loss, rtol=1e-6, atol=1e-6)
