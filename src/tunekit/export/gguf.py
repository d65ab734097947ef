"""Export a run to GGUF (llama.cpp, Ollama, LM Studio) with llama.cpp's own converter, and an
Ollama Modelfile beside it.

    path = export_gguf("runs/ner", quant="q4_k_m")      # runs/ner-gguf/ner-q4_k_m.gguf + Modelfile
    path = export_gguf("runs/ner", adapter=True)         # runs/ner-gguf/ner-lora-f16.gguf (a LoRA adapter)

A LoRA run is merged first (export.merge); a full run, or a merged model directory,
converts as it is. The conversion is llama.cpp's `convert_hf_to_gguf.py` (f32, f16, bf16,
q8_0), run as a subprocess from a llama.cpp source tree: $TUNEKIT_LLAMA_CPP, else
<venv>/llama.cpp, where `make gguf` unpacks the one vendored by the llama-cpp-python
source distribution it compiles. k-quants (q4_k_m, q5_k_m, q6_k) go through llama.cpp's
quantizer in those Python bindings. `adapter=True` writes the LoRA itself with
`convert_lora_to_gguf.py`, for runtimes that apply adapters at load time. Everything is
written to a temporary folder and renamed at the end (export.atomic).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunekit.errors import TunekitError
from tunekit.export.atomic import atomic_directory, check_output_dir
from tunekit.export.merge import check_mergeable, merge_in_memory, write_model_dir
from tunekit.export.modelfile import modelfile, template_parts
from tunekit.rundir import Run, read_run

LLAMA_CPP_ENV = "TUNEKIT_LLAMA_CPP"
CONVERTER_TYPES = ("f16", "bf16", "q8_0", "f32")  # what convert_hf_to_gguf.py writes itself
K_QUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
            "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}  # through llama.cpp's quantizer
QUANTS = (*CONVERTER_TYPES, *K_QUANTS)
MODELFILE = "Modelfile"
INSTALL_HINT = "run `make gguf` (builds llama-cpp-python once and unpacks its llama.cpp converter)"


def llama_cpp_tree() -> Path:
    """The llama.cpp source tree whose converter scripts (and gguf-py) are used."""
    tree = Path(os.environ.get(LLAMA_CPP_ENV) or Path(sys.prefix) / "llama.cpp")
    if not (tree / "convert_hf_to_gguf.py").is_file():
        raise TunekitError(f"llama.cpp's converter is not at {tree}: {INSTALL_HINT}, or set ${LLAMA_CPP_ENV} to a "
                           "llama.cpp source tree")
    return tree


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError:
        raise TunekitError(f"k-quants need llama.cpp's quantizer from the llama-cpp-python package: {INSTALL_HINT}, "
                           "or export f16 / q8_0") from None
    return llama_cpp


def default_output(run_dir: str | Path) -> Path:
    return Path(f"{Path(run_dir).resolve()}-gguf")


@dataclass
class GgufExport:
    gguf: Path
    modelfile: Path | None = None
    note: str | None = None  # why there is no Modelfile


def export_gguf(run_dir: str | Path, output: str | Path | None = None, quant: str = "f16", adapter: bool = False,
                overwrite: bool = False) -> GgufExport:
    """Write the GGUF (and the Modelfile) into `output`."""
    if quant not in QUANTS:
        raise TunekitError(f"--quant {quant} is not one of {', '.join(QUANTS)}")
    run = read_run(run_dir)
    tree = llama_cpp_tree()
    if quant in K_QUANTS:
        llama_cpp_module()
    output = check_output_dir(output or default_output(run.path), overwrite, inputs=[run.path])
    if adapter:
        return _export_adapter(run, tree, output, quant, overwrite)
    if run.is_adapter:
        check_mergeable(run)
    name = f"{run.path.name}-{quant}.gguf"
    with atomic_directory(output, overwrite, inputs=[run.path]) as tmp:
        source = run.path
        if run.is_adapter:
            source = tmp / "merged"
            write_model_dir(source, run, *merge_in_memory(run))
        convert(tree, source, tmp / name, quant)
        if source != run.path:
            shutil.rmtree(source)
        try:
            (tmp / MODELFILE).write_text(run_modelfile(run, name), encoding="utf-8")
            result = GgufExport(output / name, output / MODELFILE)
        except TunekitError as exc:
            result = GgufExport(output / name, note=f"no Modelfile: {exc}")
    return result


def convert(tree: Path, model_dir: Path, out: Path, quant: str) -> None:
    """convert_hf_to_gguf.py into `out`; a k-quant converts to f16 first, then quantizes."""
    outtype = quant if quant in CONVERTER_TYPES else "f16"
    target = out if quant in CONVERTER_TYPES else out.with_name(out.name + ".f16")
    _run_script(tree / "convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(target), "--outtype", outtype])
    if quant in K_QUANTS:
        quantize(target, out, quant)
        target.unlink()


def quantize(source: Path, out: Path, quant: str) -> None:
    llama_cpp = llama_cpp_module()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, K_QUANTS[quant])
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise TunekitError(f"llama.cpp's quantizer failed on {source} (status {status}); try --quant q8_0")


def _run_script(script: Path, args: list[str]) -> None:
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-3:]
        raise TunekitError(f"llama.cpp's {script.name} failed: {' | '.join(last)}")


def _export_adapter(run: Run, tree: Path, output: Path, quant: str, overwrite: bool) -> Path:
    if not run.is_adapter or run.method not in ("lora", "qlora"):
        raise TunekitError(f"--adapter exports a LoRA; {run.path} is a '{run.method}' run: export it without --adapter")
    if quant not in ("f16", "bf16", "q8_0", "f32"):
        raise TunekitError("a GGUF adapter is written as f16, bf16, q8_0 or f32; choose one of those with --quant")
    if not Path(run.base_model).is_dir():
        raise TunekitError(f"the adapter's base model {run.base_model} is not a local directory; llama.cpp's "
                           "adapter converter reads the base's config from one")
    name = f"{run.path.name}-lora-{quant}.gguf"
    with atomic_directory(output, overwrite, inputs=[run.path]) as tmp:
        _run_script(tree / "convert_lora_to_gguf.py", [str(run.path), "--base", run.base_model, "--outfile",
                                                      str(tmp / name), "--outtype", quant])
    return GgufExport(output / name, note="a LoRA adapter: load it over the base model's GGUF (llama.cpp "
                      "--lora, Ollama ADAPTER)")


def run_modelfile(run: Run, gguf_name: str) -> str:
    """The Modelfile of a run: its template (as the GGUF's tokenizer renders it), stops and system prompt."""
    from transformers import AutoTokenizer

    from tunekit.infer.target import chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(run.path))
    template = chat_template(tokenizer, run)
    bos = tokenizer.bos_token or ""

    def render(messages, generation):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation,
                                             chat_template=template.source)
        return text[len(bos):] if bos and text.startswith(bos) and _adds_bos(tokenizer) else text

    stops = [tokenizer.decode([i]) for i in run.stop_token_ids] or [template.eot_text]
    return modelfile(gguf_name, template_parts(render), [s for s in stops if s], run.system_prompt)


def _adds_bos(tokenizer) -> bool:
    """llama.cpp adds the BOS token itself when the tokenizer does; the template must not write it again."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id

