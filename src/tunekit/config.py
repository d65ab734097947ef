"""Run configuration: one dataclass per concern, read from YAML plus `key=value` overrides.

    config = load_config("configs/ner_lora.yaml", ["train.learning_rate=1e-4", "max_steps=20"])

An override names `section.key`, or just `key` when only one section has it. Unknown
keys, wrong types and contradictions raise `ConfigError` with a message that names the
key and says what to do. Field comments are the documentation of each key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tunekit.dtypes import NAMES as DTYPES
from tunekit.errors import ConfigError

OVERLENGTH = ("drop", "truncate")
DATA_FORMATS = ("auto", "alpaca", "instruct", "prompt_response", "sharegpt", "openai", "text")
METHODS = ("full", "freeze", "lora", "qlora", "prefix", "ptuning")
LORA_METHODS = ("lora", "qlora")  # methods that train LoRA matrices (and take the LoRA variant keys)
PROMPT_METHODS = ("prefix", "ptuning")  # virtual tokens in front of the input: no merge, no packing
STAGES = ("sft", "pt", "rm", "dpo", "kto", "orpo", "simpo", "grpo")
ALIGN_STAGES = STAGES[2:]  # on TRL's trainers (tunekit.train.stages)


@dataclass
class DatasetSpec:
    path: str  # a file, folder or glob; or a Hugging Face dataset name
    format: str = "auto"  # one of DATA_FORMATS; auto detects it from the first row
    columns: dict = field(default_factory=dict)  # canonical name -> column in the file, e.g. {prompt: q}
    split: str = "train"  # split of a hub dataset
    subset: str | None = None  # config name of a hub dataset
    max_samples: int | None = None  # keep only the first N rows
    system: str | None = None  # system prompt for rows that carry none


@dataclass
class ModelConfig:
    name_or_path: str = ""  # local directory or hub id of the base model
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    trust_remote_code: bool = False  # run the model's own modeling code (ChatGLM, Baichuan); opt-in
    template: str | None = None  # None: the tokenizer's own; a built-in name; or a .jinja file
    template_options: dict = field(default_factory=dict)  # template switches, e.g. {enable_thinking: false}
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2; None lets transformers pick


@dataclass
class DataConfig:
    datasets: list = field(default_factory=list)  # list of DatasetSpec (a bare string is a path)
    eval_datasets: list = field(default_factory=list)  # held-out sets for eval loss
    cutoff_len: int = 1024  # maximum tokens per sample (pt: block size)
    # sft samples longer than cutoff_len: drop (default: every trained answer stays whole, with the
    # end-of-turn token that teaches the model to stop) or truncate (keeps the start; its answer may
    # lose its end). data check counts both.
    overlength: str = "drop"
    val_size: float = 0.0  # fraction (<1) or count (>=1) of training rows held out for eval
    train_on_prompt: bool = False  # also train on system/user tokens
    mask_history: bool = False  # train only the last assistant turn
    packing: bool | None = None  # several samples per row; None: on for sft when supported
    num_proc: int | None = None  # tokenization worker processes; None: every core
    streaming: bool = False  # read and tokenize while training, nothing ahead (needs train.max_steps)
    shuffle_buffer: int = 10000  # streaming: rows shuffled together
    cache_dir: str | None = None  # tokenized cache; default $TUNEKIT_CACHE or ~/.cache/tunekit
    skip_bad_rows: bool = False  # train without the rows `data check` reports; false: refuse to start


@dataclass
class MethodConfig:
    name: str = "lora"  # full | freeze | lora | qlora | prefix | ptuning
    freeze_trainable_layers: int = 2  # freeze: train only the last N decoder layers
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target: typing.Any = "all"  # "all" linear layers, a list of names, or a regex string
    rslora: bool = False  # rank-stabilised scaling alpha/sqrt(r)
    dora: bool = False  # weight-decomposed LoRA
    pissa: bool = False  # PiSSA initialisation from the principal singular vectors
    loraplus_lr_ratio: float | None = None  # LoRA+: learning rate of B = ratio x that of A
    modules_to_save: list = field(default_factory=list)  # e.g. [embed_tokens, lm_head]
    bits: int = 4  # qlora: 4 or 8
    quant_type: str = "nf4"  # qlora 4-bit: nf4 | fp4
    double_quant: bool = True  # qlora 4-bit: quantize the quantization constants too
    compute_dtype: str = "auto"  # qlora 4-bit: dtype of the matmuls; auto: the model dtype (model.dtype)
    num_virtual_tokens: int = 16  # prefix / ptuning
    prefix_projection: bool = False  # prefix: reparameterise through an MLP (P-Tuning v2 style)
    encoder_hidden_size: int = 128  # ptuning: prompt encoder width


@dataclass
class TrainConfig:
    output_dir: str = ""  # the run directory
    stage: str = "sft"  # sft | pt | rm | dpo | kto | orpo | simpo | grpo (see the align section)
    num_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_epochs
    learning_rate: float = 2e-4
    batch_size: int = 4  # per device
    grad_accum: int = 1
    warmup_steps: float = 0.0  # steps, or a fraction of all steps when < 1
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (mixed-precision training)
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    eval_steps: int | None = None  # None: evaluate at the end of each epoch when there is eval data
    seed: int = 42
    resume: bool = False  # continue from the last complete checkpoint in output_dir
    overwrite: bool = False  # allow writing into an existing run directory
    group_by_length: bool = False  # batches of similar length (non-packed path)
    torch_compile: bool = False  # torch.compile the model (GPU; first steps are slow while it compiles)
    liger_kernel: bool = False  # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU, fused loss); GPU + liger-kernel
    deepspeed: str | None = None  # path to a DeepSpeed JSON config
    report_to: list = field(default_factory=lambda: ["tensorboard"])
    dataloader_workers: int = 0


@dataclass
class EvalConfig:
    test_data: str | None = None  # test set (any dataset format, or C-Eval/CMMLU/MMLU files); None: data.eval_datasets
    metrics: list = field(default_factory=list)  # exact_match, bleu-4, rouge-1/2/l, entity, choice; []: from the data
    max_samples: int | None = None  # score only the first N test rows (and validation rows during training)
    max_new_tokens: int = 256  # generation limit per answer
    predict_batch_size: int = 16  # prompts generated (or choice prompts scored) at once
    none_answer: str = "没有"  # entity: the answer that means "no entities"
    entity_sep: str = "_"  # entity: each answer line is entity<sep>type, split at the last separator
    tokenize: str = "char"  # bleu/rouge tokens: char, or word (jieba)
    normalize: bool = True  # exact_match after lower-casing, dropping punctuation and extra spaces
    shots: int = 0  # choice: answered examples before each question (few-shot)
    shot_data: str | None = None  # choice: file or folder of answered examples (dev split); None: the test set
    heldout: str | None = None  # compare: general text for the perplexity probe; None: the shipped one
    pairs: str | None = None  # compare: held-out preference pairs (preference accuracy, implicit reward)
    reward_model: str | None = None  # eval / compare: a reward-model run (stage rm) that scores the answers
    report_dir: str | None = None  # where eval writes; None: <run directory>/eval
    during_training: bool = False  # generation metrics on the validation split at every evaluation


@dataclass
class AlignConfig:
    """Options of the preference stages (rm, dpo, kto, orpo, simpo) and grpo."""

    beta: float = 0.1  # strength of the pull toward the reference model (dpo, kto, orpo, simpo; grpo: KL weight)
    loss_type: str | None = None  # TRL's variant: dpo sigmoid | ipo | hinge | robust | ... (several: "sigmoid,sft"
    # adds the chosen answers' NLL, RPO); kto kto | apo_zero_unpaired
    label_smoothing: float = 0.0  # dpo robust / cpo: assumed fraction of flipped preference labels
    simpo_gamma: float = 0.5  # simpo: target reward margin
    max_prompt_len: int | None = None  # prompts longer (tokens) are dropped, and counted; None: data.cutoff_len // 2
    rewards: list = field(default_factory=list)  # grpo: exact_match, format:REGEX, length:N, module:function, RM run dir
    num_generations: int = 4  # grpo: completions per prompt (the group)
    max_new_tokens: int = 64  # grpo: generation limit per completion
    temperature: float = 1.0  # grpo: sampling temperature


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    source: str = ""  # the YAML file it came from, for messages

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


SECTIONS = {"model": ModelConfig, "data": DataConfig, "method": MethodConfig, "train": TrainConfig,
            "eval": EvalConfig, "align": AlignConfig}


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> Config:
    """Read YAML (relative dataset paths resolve against its folder), apply overrides, validate."""
    raw = dict(base or {})
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        _apply_override(raw, item)
    cfg = from_dict(raw)
    cfg.source = str(path or "")
    if path is not None:
        _resolve_relative_paths(cfg, Path(path).resolve().parent)
    validate(cfg)
    return cfg


def from_dict(raw: dict) -> Config:
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown config section '{key}'{_suggest(key, SECTIONS)}: "
                          f"a config has the sections {', '.join(SECTIONS)}")
    parts = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"config section '{name}' must be a mapping of key: value, got {section!r}")
        parts[name] = _build(cls, section, name)
    parts["data"].datasets = [_dataset_spec(d, "data.datasets") for d in parts["data"].datasets]
    parts["data"].eval_datasets = [_dataset_spec(d, "data.eval_datasets") for d in parts["data"].eval_datasets]
    return Config(**parts)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: give the path of a YAML file (see configs/)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with sections {', '.join(SECTIONS)}")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key written twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"'{key}' is written twice in one mapping (line {key_node.start_mark.line + 1}); "
                    "merge the two into one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value (e.g. train.learning_rate=1e-4)")
    key, text = item.split("=", 1)
    value = yaml.safe_load(text) if text else ""
    if "." in key:
        section, name = key.split(".", 1)
    else:
        owners = [s for s, cls in SECTIONS.items() if name_in(cls, key)]
        if len(owners) != 1:
            hint = f"write it as one of {', '.join(f'{s}.{key}' for s in owners)}" if owners else \
                f"no section has it{_suggest(key, _all_keys())}"
            raise ConfigError(f"override '{key}': {hint}")
        section, name = owners[0], key
    if section not in SECTIONS:
        raise ConfigError(f"override '{key}': unknown section '{section}'{_suggest(section, SECTIONS)}")
    if section == "data" and name == "path":  # shorthand for a single dataset
        raw.setdefault("data", {})["datasets"] = [value]
        return
    raw.setdefault(section, {})[name] = value


def name_in(cls, key: str) -> bool:
    return key in {f.name for f in dataclasses.fields(cls)}


def _all_keys() -> list[str]:
    return [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)]


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _build(cls, values: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key '{where}.{key}'{_suggest(key, names)}; "
                              f"known keys of '{where}': {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Accept YAML values of the declared type; ints for floats; refuse anything else."""
    if hint is typing.Any or value is None and _optional(hint):
        return value
    base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    target = typing.get_origin(base[0]) or base[0]
    if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if target is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    if target is list and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise ConfigError(f"'{where}' must be {_type_name(hint)}, got {value!r}")


def _optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


def _type_name(hint) -> str:
    args = [getattr(t, "__name__", str(t)) for t in typing.get_args(hint) if t is not type(None)]
    return " or ".join(args) if args else getattr(hint, "__name__", str(hint))


def _dataset_spec(item, where: str) -> DatasetSpec:
    if isinstance(item, DatasetSpec):
        return item
    if isinstance(item, str):
        return DatasetSpec(path=item)
    if not isinstance(item, dict):
        raise ConfigError(f"each entry of '{where}' is a path or a mapping with 'path:', got {item!r}")
    if "path" not in item:
        raise ConfigError(f"an entry of '{where}' has no 'path': add path: FILE_OR_DATASET_NAME")
    return _build(DatasetSpec, item, where)


def _resolve_relative_paths(cfg: Config, folder: Path) -> None:
    """Dataset, template and DeepSpeed paths in a YAML file are relative to that file when they exist there."""
    for spec in cfg.data.datasets + cfg.data.eval_datasets:
        candidate = folder / spec.path
        if not Path(spec.path).is_absolute() and not Path(spec.path).exists() and _exists_glob(candidate):
            spec.path = os.path.normpath(candidate)
    tpl = cfg.model.template
    if tpl and tpl.endswith(".jinja") and not Path(tpl).exists() and (folder / tpl).exists():
        cfg.model.template = str(folder / tpl)
    ds = cfg.train.deepspeed
    if ds and not Path(ds).exists() and (folder / ds).is_file():
        cfg.train.deepspeed = str(folder / ds)
    for key in ("test_data", "shot_data", "heldout", "pairs", "reward_model"):
        value = getattr(cfg.eval, key)
        if value and not Path(value).is_absolute() and not Path(value).exists() and (folder / value).exists():
            setattr(cfg.eval, key, str(folder / value))


def _exists_glob(path: Path) -> bool:
    import glob

    return path.exists() or bool(glob.glob(str(path)))


def validate(cfg: Config) -> None:
    """Refuse contradictions with a message that says which keys and what to change."""
    m, d, t, me = cfg.model, cfg.data, cfg.train, cfg.method
    _one_of("model.dtype", m.dtype, DTYPES)
    _one_of("train.stage", t.stage, STAGES)
    _one_of("method.name", me.name, METHODS)
    _one_of("train.precision", t.precision, DTYPES)
    for spec in d.datasets + d.eval_datasets:
        _one_of("format of dataset " + spec.path, spec.format, DATA_FORMATS)
    if me.name == "qlora" and me.bits not in (4, 8):
        raise ConfigError(f"method.bits is {me.bits}: QLoRA quantizes to 4 or 8 bits; set method.bits: 4 or 8")
    if me.quant_type not in ("nf4", "fp4"):
        raise ConfigError(f"method.quant_type is '{me.quant_type}': use nf4 or fp4")
    if me.dora and me.pissa:
        raise ConfigError("method.dora and method.pissa are both set: PiSSA initialises plain LoRA; keep one")
    _validate_method_keys(me, d)
    if me.name in PROMPT_METHODS and t.gradient_checkpointing:
        raise ConfigError(f"train.gradient_checkpointing does not work with method '{me.name}' "
                          "(virtual tokens live in the cache); set it to false")
    if t.stage in ALIGN_STAGES:
        _validate_align(cfg)
    if t.stage == "pt" and (d.train_on_prompt or d.mask_history):
        raise ConfigError("data.train_on_prompt / data.mask_history apply to sft; stage pt trains every token")
    _one_of("data.overlength", d.overlength, OVERLENGTH)
    if d.cutoff_len < 8:
        raise ConfigError(f"data.cutoff_len is {d.cutoff_len}: give at least 8 tokens")
    if not d.val_size >= 0:
        raise ConfigError("data.val_size must be >= 0 (a fraction below 1, or a row count)")
    if d.val_size >= 1 and d.val_size != int(d.val_size):
        raise ConfigError(f"data.val_size is {d.val_size}: give a fraction below 1 (e.g. 0.05) or a whole row count")
    _validate_numbers(t, me)
    if t.resume and t.overwrite:
        raise ConfigError("train.resume and train.overwrite contradict each other: resume keeps the run "
                          "directory, overwrite replaces it; keep one")
    if t.max_steps <= 0 and t.num_epochs <= 0:
        raise ConfigError("set train.num_epochs > 0 or train.max_steps > 0")
    _validate_streaming(d, t)
    _validate_eval(cfg)


def _validate_numbers(t: TrainConfig, me: MethodConfig) -> None:
    """Training numbers the Trainer would take silently (0 steps, NaN) or fail on with a traceback."""
    if not (math.isfinite(t.learning_rate) and t.learning_rate > 0):
        raise ConfigError(f"train.learning_rate is {t.learning_rate}: give a positive number, e.g. 2e-4 (LoRA) "
                          "or 2e-5 (full)")
    for key, least in (("batch_size", 1), ("grad_accum", 1), ("logging_steps", 1), ("save_steps", 1),
                       ("save_total_limit", 1), ("dataloader_workers", 0)):
        value = getattr(t, key)
        if value < least:
            raise ConfigError(f"train.{key} is {value}: give at least {least}")
    if t.eval_steps is not None and t.eval_steps < 1:
        raise ConfigError(f"train.eval_steps is {t.eval_steps}: give at least 1, or remove it to evaluate "
                          "at the end of each epoch")
    for key in ("num_epochs", "warmup_steps", "weight_decay", "max_grad_norm"):
        value = getattr(t, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"train.{key} is {value}: give a finite number >= 0")
    if me.name in LORA_METHODS:
        if me.lora_r < 1:
            raise ConfigError(f"method.lora_r is {me.lora_r}: the LoRA rank must be at least 1 (8 or 16 is usual)")
        if not me.lora_alpha > 0:
            raise ConfigError(f"method.lora_alpha is {me.lora_alpha}: give a positive number (often 2 x lora_r)")
        if not 0 <= me.lora_dropout < 1:
            raise ConfigError(f"method.lora_dropout is {me.lora_dropout}: give a fraction in [0, 1)")


def _validate_streaming(d: DataConfig, t: TrainConfig) -> None:
    if not d.streaming:
        return
    if t.max_steps <= 0:
        raise ConfigError("data.streaming is true, and a stream has no length to count epochs in: set "
                          "train.max_steps to the number of optimizer steps")
    if d.val_size:
        raise ConfigError("data.val_size cannot hold rows out of a stream: give data.eval_datasets, or set "
                          "data.val_size: 0")
    if d.shuffle_buffer < 1:
        raise ConfigError(f"data.shuffle_buffer is {d.shuffle_buffer}: give at least 1 row (1: no shuffling)")


def _validate_align(cfg: Config) -> None:
    a, d = cfg.align, cfg.data
    if d.train_on_prompt or d.mask_history or d.packing:
        raise ConfigError(f"data.train_on_prompt / mask_history / packing apply to sft; stage {cfg.train.stage} "
                          "trains each completion (answer + end-of-turn) alone: unset them")
    if d.streaming:
        raise ConfigError(f"data.streaming applies to sft and pt; stage {cfg.train.stage} reads its (small) "
                          "preference data into memory: set data.streaming: false")
    if cfg.method.name in PROMPT_METHODS:
        raise ConfigError(f"method '{cfg.method.name}' is not supported by stage {cfg.train.stage}: use lora, "
                          "qlora, full or freeze")
    if a.max_prompt_len is not None and not 1 <= a.max_prompt_len < d.cutoff_len:
        raise ConfigError(f"align.max_prompt_len is {a.max_prompt_len}: give a count of tokens below "
                          f"data.cutoff_len ({d.cutoff_len}), which bounds prompt + completion")
    if cfg.train.stage == "grpo":
        if not a.rewards:
            raise ConfigError("stage grpo needs align.rewards: e.g. [exact_match], [\"format:^\\\\d+$\"], "
                              "[mypkg.rewards:score] or a reward-model run directory")
        if a.num_generations < 2:
            raise ConfigError(f"align.num_generations is {a.num_generations}: GRPO compares completions within "
                              "a group, give at least 2")
        if (cfg.train.batch_size * cfg.train.grad_accum) % a.num_generations:
            raise ConfigError(f"train.batch_size x train.grad_accum ({cfg.train.batch_size * cfg.train.grad_accum}) "
                              f"counts completions per step and must be a multiple of align.num_generations "
                              f"({a.num_generations}): change one of them")
    if a.beta < 0:
        raise ConfigError(f"align.beta is {a.beta}: give a value >= 0")


def _validate_eval(cfg: Config) -> None:
    from tunekit.eval.metrics import METRICS, TOKENIZE_MODES

    e = cfg.eval
    known = [*METRICS, "choice"]
    for name in e.metrics:
        _one_of("eval.metrics entry", name, known)
    if "choice" in e.metrics and len(e.metrics) > 1:
        raise ConfigError("eval.metrics mixes choice with generation metrics: multiple-choice files are scored "
                          "by option likelihood alone; use metrics: [choice] or drop it")
    _one_of("eval.tokenize", e.tokenize, TOKENIZE_MODES)
    for key in ("max_new_tokens", "predict_batch_size"):
        if getattr(e, key) < 1:
            raise ConfigError(f"eval.{key} is {getattr(e, key)}: give at least 1")
    if e.max_samples is not None and e.max_samples < 1:
        raise ConfigError(f"eval.max_samples is {e.max_samples}: give a positive count, or remove it for all rows")
    if e.shots < 0:
        raise ConfigError(f"eval.shots is {e.shots}: give 0 (zero-shot) or more")
    if e.during_training:
        if cfg.train.stage != "sft":
            raise ConfigError("eval.during_training generates answers, which needs train.stage: sft")
        if "choice" in e.metrics:
            raise ConfigError("eval.during_training scores generated answers; remove choice from eval.metrics")
        if not cfg.data.eval_datasets and cfg.data.val_size <= 0:
            raise ConfigError("eval.during_training needs a validation split: set data.val_size (e.g. 0.05) "
                              "or list data.eval_datasets")
        if cfg.data.train_on_prompt:
            raise ConfigError("eval.during_training finds each prompt by the loss mask, which "
                              "data.train_on_prompt removes; turn one of them off")


def _validate_method_keys(me: MethodConfig, d: DataConfig) -> None:
    """Keys that only mean something for some methods, and method-specific contradictions."""
    _one_of("method.compute_dtype", me.compute_dtype, DTYPES)
    lora_only = {"dora": me.dora, "rslora": me.rslora, "pissa": me.pissa,
                 "loraplus_lr_ratio": me.loraplus_lr_ratio is not None, "modules_to_save": bool(me.modules_to_save)}
    for key, is_set in lora_only.items():
        if is_set and me.name not in LORA_METHODS:
            raise ConfigError(f"method.{key} applies to LoRA ({', '.join(LORA_METHODS)}) but method.name is "
                              f"'{me.name}': unset it or choose method.name: lora")
    if me.loraplus_lr_ratio is not None and me.loraplus_lr_ratio <= 0:
        raise ConfigError(f"method.loraplus_lr_ratio is {me.loraplus_lr_ratio}: give a ratio > 0 (LoRA+ uses ~16)")
    if me.pissa and me.name == "qlora":
        raise ConfigError("method.pissa rewrites the base weights, which cannot be done faithfully on 4/8-bit "
                          "weights: use method.name: lora with pissa, or qlora without it")
    if me.name in PROMPT_METHODS and d.packing:
        raise ConfigError(f"data.packing is true but method '{me.name}' puts virtual tokens in front of each row, "
                          "which would join packed samples; set data.packing: false (or leave it unset)")
    if me.name in PROMPT_METHODS and me.num_virtual_tokens < 1:
        raise ConfigError(f"method.num_virtual_tokens is {me.num_virtual_tokens}: give at least 1")


def validate_for_training(cfg: Config) -> None:
    """What `train` needs beyond what `data check` needs."""
    if not cfg.model.name_or_path:
        raise ConfigError("model.name_or_path is empty: name a local model directory or a hub id")
    if not cfg.data.datasets:
        raise ConfigError("data.datasets is empty: list at least one dataset file (see configs/)")
    if not cfg.train.output_dir:
        raise ConfigError("train.output_dir is empty: say where the run directory goes")
    out = Path(cfg.train.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir {out} is a file, not a folder: choose another train.output_dir")
    check_model_path(cfg.model)


def check_model_path(model: ModelConfig) -> None:
    """model.name_or_path: a local folder must hold a model; a missing path that looks local is not a hub id."""
    name = model.name_or_path
    if not name:
        raise ConfigError("model.name_or_path is empty: name a local model directory or a hub id")
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in MODEL_FILES):
            raise ConfigError(f"model.name_or_path {name} is a folder without a model (no config.json or "
                              "tokenizer files): point it at a model directory (tunekit init-model makes one)")
    elif path.exists():
        raise ConfigError(f"model.name_or_path {name} is a file: give the model's folder (the one with config.json)")
    elif looks_local(name):
        raise ConfigError(f"model.name_or_path {name} does not exist (relative paths start at {Path.cwd()}): "
                          "check the path, or give a hub id like Qwen/Qwen2.5-0.5B-Instruct")


MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def looks_local(raw: str) -> bool:
    """A path that is clearly meant as a file or folder: hub ids are `name` or `owner/name`."""
    return (Path(raw).is_absolute() or raw.startswith((".", "~")) or "\\" in raw or raw.count("/") > 1
            or raw.endswith("/"))


def _one_of(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key} is '{value}'{_suggest(str(value), choices)}: choose one of {', '.join(choices)}")
