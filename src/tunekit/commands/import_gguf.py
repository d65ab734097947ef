"""tunekit import-gguf FILE.gguf OUT_DIR: a GGUF model as an ordinary Hugging Face model directory.

The output holds safetensors weights (quantized files are dequantized to fp32), the
tokenizer with the file's chat template, and a generation_config.json that stops at the
template's end-of-turn token and eos. Train on it like on any model directory:
`model.name_or_path: OUT_DIR`.
"""


def add_arguments(parser):
    from tunekit.model.gguf import supported_architectures

    parser.add_argument("gguf", metavar="FILE.gguf", help="a GGUF model file (llama.cpp, Ollama, LM Studio)")
    parser.add_argument("output", metavar="OUT_DIR", help="the model directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    parser.epilog = ("architectures (those the installed transformers reads from GGUF): "
                     + ", ".join(supported_architectures()))


def run(args) -> int:
    from tunekit.model.gguf import import_gguf

    result = import_gguf(args.gguf, args.output, overwrite=args.overwrite)
    for note in result.notes:
        print(note)
    print(f"{result.parameters / 1e6:.1f}M parameters -> {result.output}")
    return 0
