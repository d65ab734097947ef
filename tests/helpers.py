"""Plain helpers for every test folder (not fixtures): paths of shipped data and a config builder.

Import them as `from helpers import make_config, NER_TRAIN`; tests/ is on sys.path.
"""

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
