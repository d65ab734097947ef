"""tunekit mix RUN_A:0.7 RUN_B:0.3 --output DIR: one LoRA adapter, the weighted blend of several runs."""

from tunekit.commands.options import add_trust_remote_code
from tunekit.model.multi import COMBINATIONS


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR:WEIGHT", help="LoRA runs of one base, each with a weight")
    parser.add_argument("--output", "-o", required=True, help="the run directory to write (an adapter)")
    parser.add_argument("--combination", default="cat", choices=COMBINATIONS,
                        help="how to combine (peft add_weighted_adapter); cat, the default, is exact")
    parser.add_argument("--density", type=float, help="ties / dare / magnitude_prune: fraction of values kept")
    parser.add_argument("--svd-rank", type=int, help="*svd combinations: rank of the result (default: largest)")
    parser.add_argument("--base", help="the base model, if it moved since training (default: the one the runs name)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    add_trust_remote_code(parser)


def run(args) -> int:
    from tunekit.export.mix import mix_runs, parse_weighted

    output = mix_runs(parse_weighted(args.runs), args.output, combination=args.combination, density=args.density,
                      svd_rank=args.svd_rank, base=args.base, overwrite=args.overwrite,
                      trust_remote_code=args.trust_remote_code)
    print(f"mixed adapter ({args.combination}): {output}")
    print(f"merge it with: tunekit merge {output} --output MODEL_DIR")
    return 0
