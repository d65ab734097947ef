"""tunekit export RUN_DIR --format gguf [--quant f16|q8_0|q4_k_m ...] [--adapter]: GGUF + Ollama Modelfile."""

from tunekit.export.gguf import QUANTS


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run directory written by `tunekit train` (LoRA runs are merged first), "
                        "or a merged model directory")
    parser.add_argument("--format", default="gguf", choices=["gguf"], help="output format (gguf)")
    parser.add_argument("--quant", default="f16", choices=QUANTS,
                        help="tensor type: f16/bf16/q8_0/f32 from llama.cpp's converter; k-quants from its quantizer")
    parser.add_argument("--adapter", action="store_true",
                        help="write the LoRA as a GGUF adapter (llama.cpp's convert_lora_to_gguf.py) instead of a merged model")
    parser.add_argument("--output", "-o", help="folder to write (default: RUN_DIR-gguf)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")


def run(args) -> int:
    from tunekit.export.gguf import export_gguf

    result = export_gguf(args.run_dir, args.output, quant=args.quant, adapter=args.adapter, overwrite=args.overwrite)
    print(f"gguf: {result.gguf}")
    if result.modelfile:
        print(f"ollama: cd {result.modelfile.parent} && ollama create NAME -f {result.modelfile.name}")
    if result.note:
        print(result.note)
    return 0
