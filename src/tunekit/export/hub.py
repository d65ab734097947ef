"""Push a run (or a merged model) to the Hugging Face Hub with a generated model card.

    files = upload_files("runs/ner")          # what goes up: weights, tokenizer, template, tunekit.json, metrics
    card = model_card(read_run("runs/ner"))   # README.md: base model, method, data fingerprint, metrics, compare
    push("runs/ner", "me/ner-lora")           # one commit with both

Checkpoints, tensorboard logs and hidden files stay home. The card is built from what
the run recorded (tunekit.json), its eval/metrics.json and its compare/report.md when
`tunekit eval` / `tunekit compare` wrote them. The upload itself goes through
huggingface_hub (HfApi.create_commit), with the token it finds (HF_TOKEN or `hf auth login`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunekit.errors import TunekitError
from tunekit.rundir import Run, read_run

LEFT_OUT_DIRS = ("checkpoints", "logs", "eval", "compare")  # eval / compare results go into the card instead
CARD_FILE = "README.md"


def upload_files(run_dir: str | Path) -> list[str]:
    """Relative paths of the files pushed from a run directory, sorted."""
    root = Path(run_dir)
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in LEFT_OUT_DIRS or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.as_posix() != CARD_FILE:
            files.append(rel.as_posix())
    return files


def model_card(run: Run) -> str:
    """README.md for the Hub: metadata header, then what the run is and how well it does."""
    library = "peft" if run.is_adapter else "transformers"
    base = run.base_model
    header = ["---", f"library_name: {library}", "tags: [tunekit, " + run.method + "]"]
    if not Path(base).exists():  # a hub id: the Hub links the base model
        header.append(f"base_model: {base}")
    header.append("---")
    record = run.record
    lines = [*header, "", f"# {run.path.name}", "",
             f"Fine-tuned with tunekit from **{base}** by **{run.method}** (stage {record.stage}).", "",
             "| | |", "|---|---|",
             f"| base model | {base} |", f"| method | {run.method} |",
             f"| data fingerprint | `{record.data_fingerprint}` |",
             f"| training samples | {record.data_stats.get('kept', '')} |", f"| steps | {_number(record.steps)} |",
             f"| final training loss | {_number(record.final_loss)} |",
             f"| end-of-turn | `{run.eot_text or ''}` |"]
    lines += _eval_section(run.path / "eval" / "metrics.json")
    report = run.path / "compare" / "report.md"
    if report.is_file():
        lines += ["", "## Compared with the base model", "", report.read_text(encoding="utf-8").strip()]
    lines += ["", "## Use", "", "```python"]
    if run.is_adapter:
        lines += ["from peft import AutoPeftModelForCausalLM", 'model = AutoPeftModelForCausalLM.from_pretrained("REPO_ID")']
    else:
        lines += ["from transformers import AutoModelForCausalLM", 'model = AutoModelForCausalLM.from_pretrained("REPO_ID")']
    lines += ["```", "", "Versions: " + ", ".join(f"{k} {v}" for k, v in record.versions.items())]
    return "\n".join(lines) + "\n"


def _eval_section(path: Path) -> list[str]:
    if not path.is_file():
        return []
    record = json.loads(path.read_text(encoding="utf-8"))
    metrics = record.get("metrics", record)
    rows = [f"| {name} | {_number(value)} |" for name, value in metrics.items() if isinstance(value, (int, float))]
    return ["", "## Evaluation", "", "| metric | value |", "|---|---|", *rows] if rows else []


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the repo if needed and upload the files and the card in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    run = read_run(run_dir)
    files = upload_files(run.path)
    api = HfApi(token=token)
    operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(run.path / f)) for f in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=model_card(run).encode("utf-8")))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=f"tunekit push {run.path.name}")
    except (HfHubHTTPError, OSError) as exc:
        raise TunekitError(f"push to {repo_id} failed: {exc}; check the network and your token "
                           "(HF_TOKEN or `hf auth login`)") from None
    return info.commit_url
