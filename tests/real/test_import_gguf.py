"""`tunekit import-gguf` on bad input: one `error:` line, exit 1, nothing written (small fake files, fast).

The fake GGUF files are written with the gguf package (llama.cpp's own writer): metadata only,
no tensors, so each case costs milliseconds. The real import is tested in test_smollm2.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tunekit.cli import main


def fake_gguf(path, architecture: str, tensors: bool = False):
    """A GGUF file with the given architecture, a name, and (optionally) one tiny F32 tensor."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_name("fake")
    if tensors:
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_import(args, capsys) -> tuple[int, str]:
    code = main(["import-gguf", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def nothing_written(folder, name: str) -> bool:
    return not (folder / name).exists() and not list(folder.glob(f".{name}.*"))


def test_missing_file(tmp_path, capsys):
    code, err = run_import([tmp_path / "nope.gguf", tmp_path / "out"], capsys)
    assert_one_error(code, err, "nope.gguf", "not found")
    assert nothing_written(tmp_path, "out")


def test_a_file_that_is_not_gguf(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"{\"__metadata__\": {}}" + b"\0" * 64)
    code, err = run_import([bad, tmp_path / "out"], capsys)
    assert_one_error(code, err, "model.safetensors", "not a GGUF file")
    assert nothing_written(tmp_path, "out")


def test_a_truncated_gguf(tmp_path, capsys):
    whole = fake_gguf(tmp_path / "whole.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:40])
    code, err = run_import([cut, tmp_path / "out"], capsys)
    assert_one_error(code, err, "cut.gguf", "not a readable GGUF")
    assert nothing_written(tmp_path, "out")


def test_an_unsupported_architecture_names_the_supported_ones(tmp_path, capsys):
    from tunekit.model.gguf import supported_architectures

    rwkv = fake_gguf(tmp_path / "rwkv.gguf", "rwkv7")
    code, err = run_import([rwkv, tmp_path / "out"], capsys)
    assert_one_error(code, err, "rwkv7", "not one transformers reads", "llama", "qwen2")
    assert "general" not in supported_architectures() and "llama" in supported_architectures()
    assert "t5" not in supported_architectures()  # read by transformers, but not a causal LM
    assert nothing_written(tmp_path, "out")


def test_an_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    llama = fake_gguf(tmp_path / "llama.gguf", "llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, err = run_import([llama, out], capsys)
    assert_one_error(code, err, "already exists", "--overwrite")
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and not list(tmp_path.glob(".out.*"))


def test_a_gguf_transformers_cannot_build_leaves_nothing(tmp_path, capsys):
    """Supported architecture, but no config keys or tokenizer: the reader fails, nothing is written."""
    broken = fake_gguf(tmp_path / "broken.gguf", "llama", tensors=True)
    code, err = run_import([broken, tmp_path / "out"], capsys)
    assert_one_error(code, err, "broken.gguf")
    assert nothing_written(tmp_path, "out")


def test_help_lists_the_supported_architectures(capsys):
    with pytest.raises(SystemExit):
        main(["import-gguf", "--help"])
    out = capsys.readouterr().out
    assert "architectures" in out and "llama" in out and "qwen2" in out
