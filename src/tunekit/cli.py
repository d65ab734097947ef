"""The `tunekit` command: a table of commands, each a module with `add_arguments` and `run`.

    tunekit --help              lists the commands
    tunekit COMMAND --help      shows one

Commands are imported only when used, so `tunekit --help` is quick. A `TunekitError`
(bad config, bad data, bad input) is printed as one message, with exit status 1 and no
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from contextlib import contextmanager

from tunekit.errors import TunekitError
from tunekit.processes import leave_process_group

# name -> (module, one-line help)
COMMANDS = {
    "train": ("tunekit.commands.train", "fine-tune a model: tunekit train CONFIG.yaml [key=value ...]"),
    "data": ("tunekit.commands.data", "check, preview or tokenize the datasets of a config"),
    "import-gguf": ("tunekit.commands.import_gguf", "a GGUF file as a Hugging Face model directory: "
                    "tunekit import-gguf FILE.gguf OUT_DIR"),
    "templates": ("tunekit.commands.templates", "the built-in chat templates with their end-of-turn, tool-call and "
                  "reasoning formats: tunekit templates [NAME]"),
    "modules": ("tunekit.commands.modules", "list a model's linear modules and the default LoRA targets"),
    "init-model": ("tunekit.commands.init_model", "build a small random model with a tokenizer trained on text"),
    "merge": ("tunekit.commands.merge", "fold a LoRA run into its base: tunekit merge RUN_DIR --output DIR"),
    "export": ("tunekit.commands.export", "GGUF for llama.cpp / Ollama, with a Modelfile: "
               "tunekit export RUN_DIR --format gguf --quant q4_k_m"),
    "push": ("tunekit.commands.push", "upload a run to the Hugging Face Hub with a model card: tunekit push RUN_DIR REPO_ID"),
    "mix": ("tunekit.commands.mix", "blend LoRA runs with weights: tunekit mix RUN_A:0.7 RUN_B:0.3 --output DIR"),
    "chat": ("tunekit.commands.chat", "talk to a model in the terminal: tunekit chat RUN_DIR"),
    "webui": ("tunekit.commands.webui", "chat with a model in the browser, adapters side by side: tunekit webui RUN_DIR"),
    "serve": ("tunekit.commands.serve", "OpenAI-compatible API: tunekit serve RUN_DIR [--api-key KEY]"),
    "eval": ("tunekit.commands.eval", "answer and score a test set: tunekit eval RUN_DIR --data FILE"),
    "compare": ("tunekit.commands.compare", "base vs tuned report with a forgetting probe: "
                "tunekit compare base RUN_DIR --data FILE"),
    "board": ("tunekit.commands.board", "the training board in the browser, from data to chat: tunekit board --runs runs"),
    "demo": ("tunekit.commands.demo", "offline end-to-end demo: LoRA on SmolLM2-135M-Instruct, before/after "
             "(--tiny: a random tiny model)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunekit", description="Fine-tune open LLMs on your own data, then "
                                     "compare, merge, chat with and serve the result.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _version() -> str:
    from tunekit import __version__

    return f"tunekit {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-v", "--verbose"):
        parser.parse_args(argv or ["--help"])
        return 0
    verbose = argv[0] in ("-v", "--verbose")
    argv = argv[1:] if verbose else argv
    if not argv or argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0] if argv else ''!r}; choose one of {', '.join(COMMANDS)}")
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    _quiet_libraries(verbose)
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"tunekit {name}", description=help_text,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    with _remote_code_option(args):
        try:
            status = int(module.run(args) or 0)
        except TunekitError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    if status == 0:
        leave_process_group()  # under torchrun: else gloo's threads can abort the process at exit
    return status


@contextmanager
def _remote_code_option(args):
    """Messages about a model's own code name the option of this command: its flag, or the config key."""
    from tunekit.model.load import REMOTE_CODE_OPTION

    option = ("pass --trust-remote-code" if hasattr(args, "trust_remote_code")
              else "set model.trust_remote_code: true in the config")
    token = REMOTE_CODE_OPTION.set(option)
    try:
        yield
    finally:
        REMOTE_CODE_OPTION.reset(token)


def _quiet_libraries(verbose: bool) -> None:
    level = logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("bitsandbytes", "transformers", "datasets", "peft", "accelerate", "httpx", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Saving the dataset ..." bars
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards"; training keeps its own bar
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
