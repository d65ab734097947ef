"""tunekit init-model: a small random model with a tokenizer trained on the given text."""


def add_arguments(parser):
    parser.add_argument("--arch", choices=["qwen2", "llama"], default="qwen2")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                        help="text, JSON or JSONL files to train the tokenizer on")
    parser.add_argument("--output", required=True, help="model directory to create")
    parser.add_argument("--template", default="chatml", choices=["chatml", "llama3", "none"],
                        help="chat template and special tokens (none: a base model)")
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def run(args) -> int:
    from tunekit.model.init_model import init_model

    template = None if args.template == "none" else args.template
    path = init_model(args.arch, args.size, args.corpus, args.output, template=template,
                      vocab_size=args.vocab_size, seed=args.seed, overwrite=args.overwrite)
    print(f"model written to {path}")
    return 0
