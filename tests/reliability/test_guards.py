"""Guards outside the tables: remote code only by the command's own flag, the web UI's input cap and
failed turns, and the library noise users should not see."""

from __future__ import annotations

import json
import logging
import shutil
import warnings

import pytest
from helpers import NER_TEST
from reliability_helpers import run_cli


# -- remote code -----------------------------------------------------------------------------------
@pytest.fixture
def run_asking_for_remote_code(tiny_lora_run, tiny_model_dir, tmp_path):
    """A run directory whose tunekit.json says trust_remote_code: true, on a base that ships code which,
    if it ever ran, would leave a marker file."""
    marker = tmp_path / "code-ran"
    base = tmp_path / "base-with-code"
    shutil.copytree(tiny_model_dir, base)
    for module in ("configuration_evil", "modeling_evil"):
        (base / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n", encoding="utf-8")
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (base / "config.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    shutil.copytree(tiny_lora_run, run)
    meta = json.loads((run / "tunekit.json").read_text())
    meta["base_model"] = str(base)
    meta["config"]["model"]["trust_remote_code"] = True
    (run / "tunekit.json").write_text(json.dumps(meta))
    return run, marker


@pytest.mark.parametrize("command", [
    ["chat", "RUN"],
    ["merge", "RUN", "--output", "OUT"],
    ["eval", "RUN", "--data", str(NER_TEST), "--max-samples", "1", "--output", "OUT"],
    ["compare", "RUN", "RUN", "--data", str(NER_TEST), "--max-samples", "1", "--no-heldout", "--output", "OUT"],
], ids=["chat", "merge", "eval", "compare"])
def test_a_run_directory_never_switches_on_remote_code(run_asking_for_remote_code, tmp_path, capsys, command):
    run, marker = run_asking_for_remote_code
    argv = [str(run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    assert "error: " in err and "if you trust it, pass --trust-remote-code" in err
    assert "model.trust_remote_code" not in err  # the message names this command's flag, not a config key
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_engine_takes_remote_code_only_from_its_caller(run_asking_for_remote_code):
    from tunekit.infer.target import resolve_target

    run, _ = run_asking_for_remote_code
    assert resolve_target(str(run)).trust_remote_code is False
    assert resolve_target(str(run), trust_remote_code=True).trust_remote_code is True


# -- web UI ------------------------------------------------------------------------------------------
def test_webui_refuses_an_overlong_message_before_it_joins_the_history():
    import gradio as gr

    from tunekit.serve.webui import user_message_fn

    add = user_message_fn(max_chars=10)
    with pytest.raises(gr.Error, match="11 characters; this page accepts at most 10.*--max-input-chars"):
        add("x" * 11, [], [])
    turn = [{"role": "user", "content": "x" * 10}]
    assert add("x" * 10, [], []) == ["", turn, turn, turn, turn]


def test_webui_takes_a_failed_turn_back_out_so_the_next_message_works(lora_engine):
    import gradio as gr

    from tunekit.serve.webui import answer_fn

    answer = answer_fn(lora_engine, max_chars=10**6)
    sampling = (4, 0.0, 1.0, 0, 1.0, None, [])  # max_new, temperature, top_p, top_k, repetition, seed, stop
    earlier = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    too_long = earlier + [{"role": "user", "content": "word " * (lora_engine.context_length + 10)}]
    shown = []
    with pytest.raises(gr.Error, match="context"):
        for update in answer(too_long, lora_engine.default_adapter, "", *sampling):
            shown.append(update)
    assert shown[-1] == (earlier, earlier)  # the failed message is no longer in the conversation
    history, _ = list(answer(earlier + [{"role": "user", "content": "hi"}], lora_engine.default_adapter, "",
                             *sampling))[-1]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]


def test_webui_caps_the_system_prompt_too(lora_engine):
    import gradio as gr

    from tunekit.serve.webui import answer_fn

    answer = answer_fn(lora_engine, max_chars=5)
    shown = []
    with pytest.raises(gr.Error, match="system prompt has 6 characters"):
        for update in answer([{"role": "user", "content": "hi"}], lora_engine.default_adapter, "s" * 6,
                             4, 0.0, 1.0, 0, 1.0, None, []):
            shown.append(update)
    assert shown[-1] == ([], [])


# -- noise -------------------------------------------------------------------------------------------
def test_bitsandbytes_kernels_notice_is_silenced_and_nothing_else():
    import tunekit  # noqa: F401  (installs the filters)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def record(message):
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message, None, None)

    assert not logger.filter(record("Failed to load CPU gemm_4bit_forward from kernels-community: %s."))
    assert logger.filter(record("something the user should see"))


def test_gradient_checkpointing_uses_the_current_api(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunekit.config import MethodConfig
    from tunekit.model.adapters import apply_method

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = apply_method(model, MethodConfig(name="lora", lora_r=2), gradient_checkpointing=True)
    assert model.get_base_model().is_activation_checkpointing
    assert not [w for w in caught if "gradient_checkpointing_enable" in str(w.message)]


def test_ddp_does_not_search_for_unused_parameters(tiny_model_dir, tmp_path, cache_dir):
    from helpers import make_config

    from tunekit.train.run import training_arguments

    args = training_arguments(make_config(tiny_model_dir, tmp_path / "run", cache_dir), tmp_path / "run", False)
    assert args.ddp_find_unused_parameters is False
