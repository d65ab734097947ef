"""tunekit export on bad input: one error line, exit 1, nothing written."""

from tunekit.cli import main


def test_missing_converter_is_one_clear_error(tiny_lora_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNEKIT_LLAMA_CPP", str(tmp_path / "nowhere"))
    out = tmp_path / "out"
    assert main(["export", str(tiny_lora_run), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: llama.cpp's converter is not at") and "make gguf" in err and err.count("\n") == 1
    assert not out.exists()


def test_not_a_run_is_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--quant", "q8_0"]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_a_failing_conversion_leaves_nothing_under_the_name(tiny_lora_run, tmp_path, monkeypatch, capsys):
    tree = tmp_path / "llama.cpp"
    tree.mkdir()
    (tree / "convert_hf_to_gguf.py").write_text("import sys\nprint('unknown model architecture', file=sys.stderr)\n"
                                                "sys.exit(1)\n")
    monkeypatch.setenv("TUNEKIT_LLAMA_CPP", str(tree))
    out = tmp_path / "out"
    assert main(["export", str(tiny_lora_run), "--output", str(out)]) == 1
    assert "convert_hf_to_gguf.py failed: unknown model architecture" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
