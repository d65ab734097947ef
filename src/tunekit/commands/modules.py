"""tunekit modules MODEL: the model's linear modules by kind, and the default LoRA targets."""

from tunekit.config import ModelConfig


def add_arguments(parser):
    parser.add_argument("model", help="local model directory or hub id")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own modeling code")


def run(args) -> int:
    from tunekit.model.adapters import default_lora_targets, linear_modules
    from tunekit.model.load import load_model

    model = load_model(ModelConfig(name_or_path=args.model, trust_remote_code=args.trust_remote_code))
    for kind, names in linear_modules(model).items():
        print(f"{kind:10s} {', '.join(names)}")
    print(f"{'lora (all)':10s} {', '.join(default_lora_targets(model))}")
    return 0
