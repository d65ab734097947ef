"""Command-line options shared by `tunekit chat`, `tunekit webui` and `tunekit serve`.

    add_engine_arguments(parser); add_sampling_arguments(parser)
    engine = load_engine(args); params = params_from_args(args)
"""

from __future__ import annotations

from tunekit.commands.options import add_trust_remote_code
from tunekit.dtypes import NAMES as DTYPE_NAMES
from tunekit.infer.params import GenerationParams, check_params


def add_engine_arguments(parser) -> None:
    parser.add_argument("target", metavar="TARGET",
                        help="a run directory from `tunekit train`, a merged model directory, or a hub model id")
    parser.add_argument("--adapter", action="append", default=[], metavar="DIR",
                        help="also load this LoRA run directory (repeatable); chosen by its folder name")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="weights dtype (auto: bf16/fp16 on GPU, fp32 on CPU)")
    add_trust_remote_code(parser)
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                        help="hf (transformers, default) or vllm (GPU; pip install 'tunekit[vllm]')")


def add_sampling_arguments(parser, max_new_tokens: int = 512) -> None:
    defaults = GenerationParams(max_new_tokens=max_new_tokens)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=defaults.top_p)
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="0 = no limit")
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="end the answer before this text (repeatable)")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")


def params_from_args(args) -> GenerationParams:
    """The sampling options as GenerationParams, checked now (before the model loads)."""
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, repetition_penalty=args.repetition_penalty, stop=list(args.stop),
                              seed=args.seed)
    check_params(params)
    return params


def load_engine(args, limits=None):
    """limits: BatchLimits for the batching scheduler (default: its defaults)."""
    from tunekit.infer.engine import Engine

    return Engine.load(args.target, adapters=args.adapter, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code, backend=args.backend, limits=limits)
