"""tunekit train CONFIG.yaml [key=value ...]: fine-tune and write a run directory."""

from tunekit.config import load_config


def add_arguments(parser):
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value or section.key=value, e.g. train.max_steps=20")


def run(args) -> int:
    from tunekit.train.distributed import is_main_process
    from tunekit.train.run import train

    run_dir = train(load_config(args.config, args.overrides))
    if is_main_process():
        print(f"run directory: {run_dir}")
    return 0
