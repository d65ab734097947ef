"""tunekit chat TARGET: talk to a model in the terminal (streaming, multi-turn, /clear /system /exit)."""

from tunekit.serve.options import add_engine_arguments, add_sampling_arguments, load_engine, params_from_args


def add_arguments(parser):
    add_engine_arguments(parser)
    parser.add_argument("--use-adapter", default=None, metavar="NAME",
                        help="answer with this loaded adapter, or 'base' for the base model alone")
    parser.add_argument("--system", default=None, help="system prompt to start with")
    add_sampling_arguments(parser)


def run(args) -> int:
    from tunekit.serve.chat_cli import run_chat

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    params = params_from_args(args)
    with load_engine(args) as engine:
        engine.variant(args.use_adapter)  # an unknown name fails now, not at the first message
        run_chat(engine, params, adapter=args.use_adapter, system=args.system)
    return 0
