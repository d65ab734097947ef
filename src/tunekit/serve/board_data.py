"""What the board shows about a config before training: the YAML it writes, the data check,
a preview with the trained spans, token lengths, and the loss curve of a run.

    raw = board_config(Settings(model="models/tiny", data="train.jsonl", run_name="ner"), "runs")
    report = check_data(raw)     # DataReport: format, FILE:LINE problems, preview pieces, lengths

The board's form fills `Settings`; `board_config` turns it into the plain dict that is
written as runs/NAME.yaml and read back by `tunekit train` like any other config, so the
page never trains anything that the command line could not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import yaml

from tunekit.config import LORA_METHODS, from_dict, validate

PACKING = {"auto": None, "on": True, "off": False}


@dataclass
class Settings:
    model: str = ""
    data: str = ""
    run_name: str = "run"
    stage: str = "sft"
    method: str = "lora"
    lora_r: int = 8
    lora_target: str = "all"
    learning_rate: float = 2e-4
    num_epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 4
    cutoff_len: int = 1024
    packing: str = "auto"  # auto | on | off
    logging_steps: int = 5
    save_steps: int = 100


def board_config(s: Settings, runs_folder: str | Path) -> dict:
    """The config dict for these settings (only the keys the board sets; the rest keep their defaults)."""
    method = {"name": s.method}
    if s.method in LORA_METHODS:
        targets = [t.strip() for t in s.lora_target.split(",") if t.strip()]
        method.update(lora_r=int(s.lora_r), lora_target="all" if targets in ([], ["all"]) else targets)
    data = {"datasets": [s.data.strip()], "cutoff_len": int(s.cutoff_len)}
    if PACKING[s.packing] is not None:
        data["packing"] = PACKING[s.packing]
    return {
        "model": {"name_or_path": s.model.strip()},
        "data": data,
        "method": method,
        "train": {"output_dir": str(Path(runs_folder).resolve() / s.run_name), "stage": s.stage,
                  "learning_rate": float(s.learning_rate), "num_epochs": float(s.num_epochs),
                  "max_steps": int(s.max_steps), "batch_size": int(s.batch_size),
                  "logging_steps": int(s.logging_steps), "save_steps": int(s.save_steps)},
    }


def config_yaml(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def parsed(raw: dict):
    cfg = from_dict(raw)
    validate(cfg)
    return cfg


@dataclass
class DataReport:
    formats: list[str]
    problems: list[str]  # FILE:LINE: message
    summary: str
    preview: list[tuple[str, str | None]] = field(default_factory=list)  # (text, "trained" | None)
    lengths: list[int] = field(default_factory=list)


def check_data(raw: dict, preview_samples: int = 2) -> DataReport:
    """Tokenize the config's data as training will (the cache is then reused) and describe it."""
    from tunekit.data.check import format_report, trained_spans
    from tunekit.data.formats import load_records, sniff_format
    from tunekit.data.pipeline import prepare_data
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer

    cfg = parsed(raw)
    tokenizer = load_tokenizer(cfg.model)
    sft = cfg.train.stage == "sft"
    template = load_template(tokenizer, cfg.model.template) if sft else None
    formats = [f"{spec.path}: {sniff_format(spec, cfg.train.stage)}" for spec in cfg.data.datasets]
    data = prepare_data(cfg, tokenizer, template)
    preview = []
    for record in load_records(cfg.data.datasets, cfg.train.stage).records[:preview_samples]:
        if template is None:
            preview += [(record.text, "trained"), ("\n\n", None)]
            continue
        for enc in template.encode_samples(record, train_on_prompt=cfg.data.train_on_prompt,
                                           mask_history=cfg.data.mask_history):
            pieces, _, _ = trained_spans(template, enc)
            preview += [(text, "trained" if trained else None) for text, trained in pieces] + [("\n\n", None)]
    lengths = list(data.train["length"]) if "length" in data.train.column_names else \
        [len(ids) for ids in data.train["input_ids"]]
    return DataReport(formats, [str(p) for p in data.problems],
                      format_report(data.stats, [], cfg.data.cutoff_len), preview, lengths)


def length_histogram(lengths: list[int], bins: int = 12):
    """A table (tokens, samples) for a bar plot: how many samples fall in each token-length range."""
    import pandas as pd

    if not lengths:
        return pd.DataFrame({"tokens": [], "samples": []})
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // bins))
    counts: dict[int, int] = {}
    for n in lengths:
        start = low + (n - low) // width * width
        counts[start] = counts.get(start, 0) + 1
    starts = range(low, high + 1, width)
    return pd.DataFrame({"tokens": [f"{s}-{s + width - 1}" for s in starts],
                         "samples": [counts.get(s, 0) for s in starts]})


def loss_svg(points: list[tuple[int, float]], width: int = 560, height: int = 260) -> str:
    """The loss curve as inline SVG; each point is a circle carrying its step and loss (data-step, data-loss)."""
    pad = 44
    if not points:
        return (f'<svg id="loss-svg" width="{width}" height="{height}" role="img"><text x="{pad}" y="{height // 2}" '
                'fill="#888">no loss logged yet</text></svg>')
    steps, losses = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)
    y0, y1 = min(losses), max(losses)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 - y0 < 1e-9 else (y0, y1)

    def xy(step, loss):
        return (pad + (step - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad + (y0 - loss) / (y1 - y0) * (height - 2 * pad))

    coords = [xy(s, v) for s, v in points]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" data-step="{s}" data-loss="{v:.6g}"/>'
                   for (x, y), (s, v) in zip(coords, points))
    labels = (f'<text x="{pad}" y="{height - 12}">step {x0}</text>'
              f'<text x="{width - pad}" y="{height - 12}" text-anchor="end">step {max(steps)}</text>'
              f'<text x="4" y="{pad - 8}">{y1:.3g}</text><text x="4" y="{height - pad}">{y0:.3g}</text>')
    return (f'<svg id="loss-svg" width="{width}" height="{height}" role="img" font-size="12" fill="currentColor">'
            f'<title>{escape("training loss by step")}</title>'
            f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="none" '
            f'stroke="#8884"/>{labels}<polyline points="{line}" fill="none" stroke="#e8710a" stroke-width="2"/>'
            f'<g fill="#e8710a">{dots}</g></svg>')
