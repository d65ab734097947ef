"""tunekit serve TARGET: an OpenAI-compatible HTTP API (127.0.0.1 by default, optional API key)."""

import os

from tunekit.errors import TunekitError
from tunekit.serve.options import add_engine_arguments, add_sampling_arguments, load_engine, params_from_args


def add_arguments(parser):
    add_engine_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=os.environ.get("TUNEKIT_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $TUNEKIT_API_KEY; none = open)")
    parser.add_argument("--model-name", default=None, help="model id clients send (default: the target's folder name)")
    parser.add_argument("--max-tokens-cap", type=int, default=2048, help="largest max_tokens a request may ask for")
    parser.add_argument("--max-request-bytes", type=int, default=1 << 20, help="largest request body accepted")
    parser.add_argument("--max-messages", type=int, default=256, help="most messages in one request")
    parser.add_argument("--max-chars", type=int, default=200_000, help="most characters of content in one request")
    parser.add_argument("--max-running", type=int, default=32, help="answers generated together (one batch) at most")
    parser.add_argument("--max-queued", type=int, default=256,
                        help="requests waiting for a slot at most; beyond that: 429 with Retry-After")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="one answer after another, each a plain generate call (as before batching)")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds a request may take (then 504)")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long running requests may finish while new ones are refused")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the model on a CPU (default: $OMP_NUM_THREADS if set, else every "
                             "core but one, which is left to the HTTP server)")
    add_sampling_arguments(parser)


def model_threads(requested: int | None, cores: int, environ=os.environ) -> int | None:
    """Torch's intra-op threads for serving on a CPU: as asked; else None (torch's own choice) when
    $OMP_NUM_THREADS says; else every core but one. The HTTP server's thread (parsing requests,
    writing every streamed token) runs beside the model's: with all cores given to torch, each
    parallel op waits for a thread the scheduler has parked, and on 2 cores batched serving of
    32 clients ran at 5.8x the one-at-a-time server against 6.1x with one core left free
    (bench/serve.py, both servers on the same setting)."""
    if requested is not None:
        if requested < 1:
            raise TunekitError(f"--threads must be at least 1, got {requested}")
        return requested
    if environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, cores - 1)


def run(args) -> int:
    import torch

    from tunekit.infer.batching import BatchLimits
    from tunekit.serve.api import Limits, serve

    threads = model_threads(args.threads, len(os.sched_getaffinity(0)))
    if threads is not None and not torch.cuda.is_available():
        torch.set_num_threads(threads)
    params = params_from_args(args)
    limits = Limits(max_tokens=args.max_tokens_cap, max_request_bytes=args.max_request_bytes,
                    max_messages=args.max_messages, max_chars=args.max_chars, drain_s=args.drain_seconds)
    batch = BatchLimits(max_running=args.max_running, max_queued=args.max_queued, timeout_s=args.request_timeout,
                        enabled=args.batching)
    with load_engine(args, batch) as engine:
        serve(engine, params, host=args.host, port=args.port, api_key=args.api_key,
              model_name=args.model_name, limits=limits)
    return 0
