"""Plain helpers for every test folder (not fixtures): paths of shipped data, a config builder, and
chat templates rendered as transformers does with the clock fixed.

Import them as `from helpers import make_config, NER_TRAIN`; tests/ is on sys.path.
"""

from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "tunekit" / "assets"
SHARED = ROOT.parent / "shared"
NER_TRAIN = ASSETS / "demo" / "ner_train.jsonl"
NER_TEST = ASSETS / "demo" / "ner_test.jsonl"
CORPUS = [ASSETS / "corpus" / "wiki_en.txt", NER_TRAIN]
FIXTURES = ROOT / "tests" / "fixtures"
CONFIGS_DIR = ROOT / "configs"


def make_config(model_dir, output_dir, cache, **sections):
    """A Config for a short run on the NER demo data; sections override keys per section."""
    from tunekit.config import from_dict, validate

    raw = {
        "model": {"name_or_path": str(model_dir)},
        "data": {"datasets": [{"path": str(NER_TRAIN), "max_samples": 64}], "cutoff_len": 96,
                 "cache_dir": str(cache)},
        "method": {"name": "lora", "lora_r": 4},
        "train": {"output_dir": str(output_dir), "max_steps": 4, "batch_size": 8, "logging_steps": 1,
                  "save_steps": 1000, "learning_rate": 1e-3, "report_to": []},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    cfg = from_dict(raw)
    validate(cfg)
    return cfg


FIXED_DAY = (2024, 7, 26)  # Llama 3.1's own default date: "26 Jul 2024"


@contextmanager
def fixed_clock():
    """transformers' strftime_now (templates that print today's date) at FIXED_DAY, so they render the
    same every day."""
    import datetime

    import transformers.utils.chat_template_utils as chat_utils

    class Day(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(*FIXED_DAY)

    clock, chat_utils.datetime = chat_utils.datetime, Day
    try:
        yield
    finally:
        chat_utils.datetime = clock


def render_template(source: str, messages: list[dict], tools=None, add_generation_prompt=False, **kwargs) -> str:
    """Text of a Jinja chat template as transformers renders it, clock fixed; a template that raises
    gives "raised" (two templates agree when both refuse a conversation)."""
    import jinja2
    from transformers.utils.chat_template_utils import render_jinja_template

    with fixed_clock():
        try:
            texts, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=source,
                                             add_generation_prompt=add_generation_prompt, **kwargs)
        except jinja2.TemplateError:
            return "raised"
    return texts[0]


TINY_LM = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, use_cache=False)


def tiny_causal_lm(architecture: str, attention: str = "sdpa"):
    """A 2-layer random Qwen2 or Llama (grouped-query attention) in fp32, eval mode, no cache."""
    import torch
    import transformers

    configs = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}
    torch.manual_seed(0)
    config = configs[architecture](**TINY_LM)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention).float().eval()


def tiny_samples(lengths: list[int], seed: int) -> list[dict]:
    """Random samples for tiny_causal_lm: some trained from their first token, some after a 1-2 token prompt."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index, length in enumerate(lengths):
        ids = torch.randint(1, TINY_LM["vocab_size"], (length,), generator=generator).tolist()
        prompt = index % 3
        samples.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return samples
