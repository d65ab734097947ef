"""tunekit demo: offline end to end — build a tiny model, fine-tune it, show before/after."""


def add_arguments(parser):
    parser.add_argument("--workdir", default="runs/demo", help="where the base model and run directory go")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the measured recipe)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N held-out samples")


def run(args) -> int:
    from tunekit.demo import run_demo

    run_demo(args.workdir, steps=args.steps, test_limit=args.limit)
    return 0
