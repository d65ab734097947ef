"""tunekit data {check,preview,tokenize} CONFIG.yaml [key=value ...]."""

import sys

from tunekit.config import load_config


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate every dataset; FILE:LINE per problem; exit 1 if any")
    preview = sub.add_parser("preview", help="show rendered samples with the trained spans marked")
    preview.add_argument("-n", type=int, default=3, help="how many samples (default 3)")
    tokenize = sub.add_parser("tokenize", help="tokenize ahead of training into the cache that train reuses")
    for p in (check, preview, tokenize):
        p.add_argument("config", help="YAML config")
        p.add_argument("overrides", nargs="*", help="key=value overrides")


def _setup(args):
    from tunekit.config import check_model_path
    from tunekit.data.templates import load_template
    from tunekit.model.load import load_tokenizer

    cfg = load_config(args.config, args.overrides)
    check_model_path(cfg.model)  # the tokenizer decides token counts
    tokenizer = load_tokenizer(cfg.model)
    template = (load_template(tokenizer, cfg.model.template, cfg.model.template_options)
                if cfg.train.stage == "sft" else None)
    return cfg, tokenizer, template


def run(args) -> int:
    return {"check": check, "preview": preview, "tokenize": tokenize}[args.action](args)


def check(args) -> int:
    from tunekit.config import ALIGN_STAGES
    from tunekit.data.check import format_report, problems_file
    from tunekit.data.pipeline import prepare_data

    cfg, tokenizer, template = _setup(args)
    if cfg.train.stage in ALIGN_STAGES:
        return _check_align(cfg, tokenizer)
    data = prepare_data(cfg, tokenizer, template)
    print(format_report(data.stats, data.problems, cfg.data.cutoff_len, problems_file(cfg, data)))
    return 1 if data.problems else 0


def _check_align(cfg, tokenizer) -> int:
    """Pairs, unpaired rows or prompts, rendered as the stage trains them (tunekit.data.align_data)."""
    from tunekit.data.align_data import build_dataset
    from tunekit.data.check import format_report
    from tunekit.data.templates import load_template
    from tunekit.train.stages import STAGES

    stage = STAGES[cfg.train.stage]
    template = load_template(tokenizer, cfg.model.template)
    _, stats, problems = build_dataset(cfg, cfg.data.datasets, template, stage.records, stage.layout)
    print(format_report(stats, problems, cfg.data.cutoff_len).rsplit("\ntoken lengths", 1)[0])
    print(f"prompts longer than align.max_prompt_len (dropped): {stats['prompt_too_long']}")
    return 1 if problems else 0


def overlength_note(tokens: int, data_cfg) -> str:
    if tokens <= data_cfg.cutoff_len:
        return ""
    fate = "dropped" if data_cfg.overlength == "drop" else f"truncated to {data_cfg.cutoff_len} tokens"
    return f"  OVERLENGTH > cutoff_len {data_cfg.cutoff_len}: {fate} in training (data.overlength)"


def preview(args) -> int:
    from tunekit.data.check import render_marked
    from tunekit.data.formats import load_records

    cfg, tokenizer, template = _setup(args)
    loaded = load_records(cfg.data.datasets, cfg.train.stage)
    color = sys.stdout.isatty()
    for record in loaded.records[: args.n]:
        if template is None:
            ids = tokenizer(record.text, add_special_tokens=False)["input_ids"]
            print(f"--- {record.source}  tokens: {len(ids)} (all trained)\n{record.text}\n")
            continue
        text, total, trained = render_marked(template, record, color, train_on_prompt=cfg.data.train_on_prompt,
                                             mask_history=cfg.data.mask_history)
        print(f"--- {record.source}  tokens: {total}  trained: {trained}"
              f"{overlength_note(total, cfg.data)}\n{text}\n")
    if not color:
        print("(trained tokens are shown between [[ and ]])")
    return 0


def tokenize(args) -> int:
    from tunekit.data.check import format_report, problems_file
    from tunekit.data.pipeline import cache_root, prepare_data

    cfg, tokenizer, template = _setup(args)
    data = prepare_data(cfg, tokenizer, template)
    print(format_report(data.stats, data.problems, cfg.data.cutoff_len, problems_file(cfg, data)))
    state = "already cached" if data.cache_hit else "tokenized"
    print(f"{state}: {len(data.train)} samples, fingerprint {data.fingerprint}, "
          f"in {cache_root(cfg) / 'datasets'} (one entry per data file)")
    return 0
