"""tunekit serve TARGET: an OpenAI-compatible HTTP API (127.0.0.1 by default, optional API key)."""

import os

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
    add_sampling_arguments(parser)


def run(args) -> int:
    from tunekit.serve.api import Limits, serve

    params = params_from_args(args)
    limits = Limits(max_tokens=args.max_tokens_cap, max_request_bytes=args.max_request_bytes)
    with load_engine(args) as engine:
        serve(engine, params, host=args.host, port=args.port, api_key=args.api_key,
              model_name=args.model_name, limits=limits)
    return 0
