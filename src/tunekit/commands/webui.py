"""tunekit webui TARGET: a chat page in the browser, with adapters side by side (127.0.0.1 by default)."""

from tunekit.serve.options import add_engine_arguments, add_sampling_arguments, load_engine, params_from_args


def add_arguments(parser):
    add_engine_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link (off unless asked: anyone with it can use the model)")
    from tunekit.serve.webui import MAX_INPUT_CHARS

    parser.add_argument("--max-input-chars", type=int, default=MAX_INPUT_CHARS,
                        help=f"longest message (and system prompt) the page accepts, in characters "
                             f"(default {MAX_INPUT_CHARS})")
    add_sampling_arguments(parser)


def run(args) -> int:
    from tunekit.errors import TunekitError
    from tunekit.serve.webui import launch

    params = params_from_args(args)
    if args.max_input_chars < 1:
        raise TunekitError(f"--max-input-chars is {args.max_input_chars}: give at least 1")
    with load_engine(args) as engine:
        launch(engine, params, host=args.host, port=args.port, share=args.share, max_input_chars=args.max_input_chars)
    return 0
