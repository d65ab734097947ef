"""Several adapters on one base model: load them by name, switch the active one, stack or blend them.

    model, tokenizer = load_adapters({"ner": "runs/ner", "chat": "runs/chat"})   # first one active
    activate(model, "chat")                    # only the chat adapter
    activate(model, ["ner", "chat"])           # stacked: both LoRA deltas are added
    combine(model, {"ner": 0.7, "chat": 0.3}, "blend")   # a new adapter, weighted; then activate(model, "blend")
    adapter_names(model)                       # ["ner", "chat", "blend"]
    with model.disable_adapter(): ...          # the base alone (peft)
    model.generate(..., adapter_names=["ner", "chat", "__base__"])   # one adapter per row (peft)

The model is a peft `PeftModel` in eval mode; `tokenizer` is the runs' tokenizer with the
chat template they were trained with. Runs are tunekit run directories (tunekit.json
names the base model, so nobody repeats it) or outputs of `tunekit mix`. Every run must
have been trained on the same base model with the same tokenizer and template, which is
checked before anything heavy is loaded. One run may be of any adapter method (lora,
qlora, dora, prefix, ptuning); several must all be LoRA. PiSSA runs rewrite the base
weights as they load, so they cannot share a base with other adapters.

`load_base(run)` is the single place where a run's base model is loaded (merge uses it):
from the path in tunekit.json or `base=` when it moved, in the given dtype ("auto": as
stored), never quantized unless `quantization=` says so, embeddings grown to the run's
tokenizer exactly as in training.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from tunekit.config import PROMPT_METHODS, ModelConfig
from tunekit.dtypes import NAMES, checkpoint_dtype
from tunekit.errors import TunekitError
from tunekit.model.load import load_model, load_tokenizer
from tunekit.rundir import ADAPTER_FILE, TEMPLATE_FILE, Run, read_run

# peft add_weighted_adapter combinations; "cat" is exact: the weighted sum of the deltas.
COMBINATIONS = ("cat", "linear", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd")
SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
NEEDS_DENSITY = tuple(c for c in COMBINATIONS if c.startswith(("ties", "dare", "magnitude")))


def base_model_config(run: Run, base: str | None = None, trust_remote_code: bool = False) -> ModelConfig:
    """The ModelConfig the run was trained with, pointing at its base (or at `base` when it moved).
    Remote code runs only when the caller says so: the run's own config never switches it on."""
    trained = run.record.config.get("model", {})
    name = str(base or run.base_model)
    if Path(name).is_absolute() and not Path(name).exists():
        raise TunekitError(f"the base model {name} recorded in {run.path}/tunekit.json is not there (moved or "
                           "deleted?): pass --base DIR (base= in Python) with the model the run was trained on")
    return ModelConfig(name_or_path=name, trust_remote_code=trust_remote_code,
                       attn_implementation=trained.get("attn_implementation"))


def load_base(run: Run, dtype: str = "auto", base: str | None = None, quantization=None,
              trust_remote_code: bool = False):
    """(model, tokenizer): the run's base in `dtype` (auto | bf16 | fp16 | fp32) and the run's tokenizer."""
    if dtype not in NAMES:
        raise TunekitError(f"dtype '{dtype}' is unknown: choose one of {', '.join(NAMES)}")
    cfg = base_model_config(run, base, trust_remote_code)
    tokenizer = load_tokenizer(cfg, path=str(run.path))
    return load_model(cfg, tokenizer, quantization=quantization, dtype=checkpoint_dtype(dtype)), tokenizer


def read_adapter_runs(runs: Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, Run]:
    """name -> Run, checked: adapters, one base, one template; several only when all are LoRA."""
    named = dict(runs) if isinstance(runs, Mapping) else _names_from_folders(runs)
    infos = {_check_name(name): read_run(path) for name, path in named.items()}
    if not infos:
        raise TunekitError("no adapter runs given")
    for info in infos.values():
        _check_adapter(info, several=len(infos) > 1)
    _check_same_base(infos)
    _check_same_template(infos)
    return infos


def load_adapters(runs: Mapping[str, str | Path] | Sequence[str | Path], dtype: str = "auto",
                  base: str | None = None, quantization=None, trust_remote_code: bool = False):
    """(PeftModel with every run loaded under its name, the first one active; tokenizer)."""
    from peft import PeftModel

    infos = read_adapter_runs(runs)
    first_name, first = next(iter(infos.items()))
    model, tokenizer = load_base(first, dtype, base, quantization, trust_remote_code)
    with _fits(first):
        model = PeftModel.from_pretrained(model, str(first.path), adapter_name=first_name)
    for name, info in list(infos.items())[1:]:
        with _fits(info):
            model.load_adapter(str(info.path), adapter_name=name)
    model.set_adapter(first_name, inference_mode=True)
    model.eval()
    return model, tokenizer


def adapter_names(model) -> list[str]:
    return list(model.peft_config)


def activate(model, names: str | Sequence[str]) -> None:
    """Make one adapter active, or several at once (stacked: their LoRA deltas are summed)."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in model.peft_config]
    if unknown or not names:
        raise TunekitError(f"no adapter named {unknown or names}; this model has {adapter_names(model)}")
    if len(names) == 1:
        model.set_adapter(names[0], inference_mode=True)
        return
    if any(model.peft_config[n].is_prompt_learning for n in names):
        raise TunekitError("only LoRA adapters can be stacked; prefix / ptuning adapters are used one at a time")
    try:
        model.base_model.set_adapter(names, inference_mode=True)
    except ValueError as exc:
        raise TunekitError(f"cannot stack {names}: {exc}") from None


def combine(model, weights: Mapping[str, float], name: str, combination: str = "cat",
            density: float | None = None, svd_rank: int | None = None, seed: int = 0) -> str:
    """Add adapter `name`, the weighted combination of loaded LoRA adapters (peft add_weighted_adapter).

    cat: exact, delta = sum of weight x delta, rank = sum of ranks. linear / ties / dare_*:
    need equal ranks (ties, dare, magnitude_prune also a density in (0, 1]). *svd: the
    exact sum truncated to svd_rank (default: the largest rank). Random pruning (dare) is
    seeded, so the same command gives the same adapter.
    """
    _check_combinable(model, weights, name, combination, density)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model.add_weighted_adapter(list(weights), [float(w) for w in weights.values()], name,
                                       combination_type=combination, svd_rank=svd_rank, density=density)
        except (ValueError, TypeError) as exc:
            raise TunekitError(f"cannot combine {list(weights)} with '{combination}': {exc}") from None
    _unit_scaling(model, name)
    return name


def _unit_scaling(model, name: str) -> None:
    """The new adapter has its scaling baked in (lora_alpha = r): make it exactly 1, also for rsLoRA inputs.

    peft copies use_rslora from the first input, which would scale the result by sqrt(r) again.
    """
    from peft.tuners.lora import LoraLayer

    config = model.peft_config[name]
    config.use_rslora, config.init_lora_weights = False, True
    for module in model.modules():
        if isinstance(module, LoraLayer) and name in module.scaling:
            module.scaling[name] = 1.0


def _check_combinable(model, weights: Mapping[str, float], name: str, combination: str, density) -> None:
    if combination not in COMBINATIONS:
        raise TunekitError(f"combination '{combination}' is unknown: choose one of {', '.join(COMBINATIONS)}")
    if _check_name(name) in model.peft_config:
        raise TunekitError(f"an adapter named '{name}' is already loaded: choose another name")
    configs = {}
    for adapter in weights:
        if adapter not in model.peft_config:
            raise TunekitError(f"no adapter named '{adapter}'; this model has {adapter_names(model)}")
        configs[adapter] = model.peft_config[adapter]
    for adapter, config in configs.items():
        problem = _not_combinable(config)
        if problem:
            raise TunekitError(f"adapter '{adapter}' {problem}")
    ranks = {adapter: config.r for adapter, config in configs.items()}
    if combination in SAME_RANK and len(set(ranks.values())) > 1:
        raise TunekitError(f"combination '{combination}' needs adapters of the same rank, these have {ranks}: "
                           "use --combination cat (exact, any ranks) or svd")
    if combination in NEEDS_DENSITY and not (density is not None and 0 < density <= 1):
        raise TunekitError(f"combination '{combination}' needs --density in (0, 1], the fraction of values kept "
                           "(e.g. 0.5)")


def _not_combinable(config) -> str | None:
    if config.is_prompt_learning or not hasattr(config, "use_dora"):
        return "is not a LoRA adapter: only LoRA adapters can be combined"
    if config.use_dora:
        return "is a DoRA adapter: its trained magnitude vectors cannot be combined; merge it instead"
    if str(config.init_lora_weights).startswith("pissa"):
        return "is a PiSSA adapter, which rewrites the base weights: it cannot be combined with others"
    if config.modules_to_save:
        return (f"trains whole modules ({', '.join(config.modules_to_save)}), which cannot be weighted; "
                "only LoRA matrices can be combined")
    return None


def _names_from_folders(paths: Sequence[str | Path]) -> dict[str, str | Path]:
    named: dict[str, str | Path] = {}
    for path in paths:
        name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).resolve().name) or "adapter"
        name = f"{name}_" if hasattr(torch.nn.Module, name) else name
        if name in named:
            raise TunekitError(f"two runs are named '{name}' ({named[name]} and {path}): give names explicitly")
        named[name] = path
    return named


def _check_name(name: str) -> str:
    """peft keeps adapters in ModuleDicts: no dots, and no name a torch module already has (half, cuda ...)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name or "") or name == "__base__" or hasattr(torch.nn.Module, name):
        raise TunekitError(f"adapter name '{name}' is not allowed: use letters, digits, '_' or '-', and not a "
                           "name torch modules use (half, float, cuda, train, eval ...)")
    return name


def _check_adapter(info: Run, several: bool) -> None:
    if not info.is_adapter:
        raise TunekitError(f"{info.path} is a '{info.method}' run: a complete model, not an adapter; load it "
                           "directly with AutoModelForCausalLM.from_pretrained")
    if several and info.method in PROMPT_METHODS:
        raise TunekitError(f"{info.path} is a '{info.method}' run: its virtual tokens cannot share a model with "
                           "other adapters; load it on its own")
    if several and str(_adapter_config(info).get("init_lora_weights")).startswith("pissa"):
        raise TunekitError(f"{info.path} is a PiSSA run, which rewrites the base weights as it loads: it "
                           "cannot share a base with other adapters; load it on its own or merge it first")


def _adapter_config(info: Run) -> dict:
    return json.loads((info.path / ADAPTER_FILE).read_text(encoding="utf-8"))


def _check_same_base(infos: dict[str, Run]) -> None:
    bases = {name: info.base_model for name, info in infos.items()}
    if len(set(bases.values())) > 1:
        listing = "; ".join(f"{name}: {b}" for name, b in bases.items())
        raise TunekitError(f"these adapters were trained on different base models ({listing}): only adapters "
                           "of one base can be loaded or mixed together")


def _check_same_template(infos: dict[str, Run]) -> None:
    first = next(iter(infos.values()))
    for info in infos.values():
        if _text_signature(info) != _text_signature(first):
            raise TunekitError(f"{info.path} was trained with another tokenizer, chat template or stop tokens "
                               f"than {first.path}: adapters used together must share them")


def _text_signature(info: Run) -> tuple:
    """What must agree between runs used together: template, stop tokens, tokenizer vocabulary."""
    files = [info.path / TEMPLATE_FILE, info.path / "tokenizer.json"]
    digests = [hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None for f in files]
    return (*digests, tuple(info.stop_token_ids))


@contextmanager
def _fits(info: Run):
    """Turn peft's size-mismatch errors into a message that names the run and the base."""
    try:
        yield
    except (RuntimeError, ValueError) as exc:
        lines = str(exc).strip().splitlines() or [""]
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[0])
        raise TunekitError(f"the adapter in {info.path} does not fit the base model {info.base_model} "
                           f"(incompatible shapes or modules): {detail}") from None
