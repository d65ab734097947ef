"""tunekit merge RUN_DIR --output DIR: fold a LoRA / DoRA run into its base, a complete model directory."""

from tunekit.commands.options import add_trust_remote_code
from tunekit.dtypes import NAMES


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run directory written by `tunekit train` (or `tunekit mix`)")
    parser.add_argument("--output", "-o", required=True, help="the model directory to write")
    parser.add_argument("--dtype", default="auto", choices=NAMES,
                        help="dtype of the merged weights (auto: the base model's own)")
    parser.add_argument("--base", help="the base model, if it moved since training (default: the one the run names)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--max-shard-size", default="4GB", help="largest safetensors file (default 4GB)")
    add_trust_remote_code(parser)


def run(args) -> int:
    from tunekit.export.merge import merge_run

    result = merge_run(args.run_dir, args.output, dtype=args.dtype, base=args.base, overwrite=args.overwrite,
                       max_shard_size=args.max_shard_size, trust_remote_code=args.trust_remote_code)
    for note in result.notes:
        print(note)
    print(f"merged model: {result.output}")
    return 0
