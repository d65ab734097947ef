"""DPO and GRPO on the real SmolLM2-135M-Instruct, on 2 CPU cores: do they learn what they should?

    python bench/align_real.py                     # both; writes bench/results/align_real.{json,md}
    python bench/align_real.py --only dpo          # or grpo
    python bench/align_real.py --model models/SmolLM2-135M-Instruct --workdir /tmp/align_real

DPO (LoRA) on a preference the base model does not hold, built as in the tiny-model test
(tests/align/test_learns.py): "Name one thing about the <topic>." answered with an animal
(chosen) or a colour (rejected), drawn at random per pair, so the base ranks held-out pairs
by chance. Measured on held-out topics: preference accuracy (chosen completion more likely
than the rejected one) before and after, DPO's implicit-reward accuracy after (the policy
against the base with its adapter disabled), and the share of greedy answers that are an
animal. Targets: ~50% -> >= 90% accuracy, >= 80% of the answers.

GRPO (LoRA) on a verifiable format with a reward in [0, 1]: "Is the <topic> bigger than a
car? Answer yes or no." rewarded by `yes_or_no` below: 0.5 when the answer starts with yes
or no, and 0.5 more when that word (with an optional full stop) is the whole answer *and*
the model ended its turn there. The instruct model mostly starts right and then goes on
talking. Target: the mean reward over the last 20% of the steps minus the first 20% >= 0.3;
also measured, greedy answers to held-out topics that are exactly "yes"/"no" and end.

What did not work first (kept honest): `length:16` (1 up to 16 characters) was gamed: the
reward went 0.38 -> 1.00 while the model learned to emit twelve one-character tokens
("M:J:S:A:B:P:") and never end its turn, since a completion cut at max_new_tokens still
scores (bench/results/align_real.json keeps that run). A bare-number format ("How many
letters...? Reply with the number only.", 1 for digits and the end of the turn) gave no
signal: the base never answered that way in 40 samples, so every group scored 0. This
task at learning rate 1e-3 learned within two steps (0.19 -> 0.94; first fifth 0.83, last
1.00, a gain of only +0.17 by the measure above; bench/results/align_real_grpo_lr1e-3.*),
hence 1e-4.

Fixed seeds; the load average is recorded at the start and the end of each part.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, setup

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
RESULTS = ROOT / "bench" / "results"
SEED = 0
ANIMALS = ["dog", "cat", "horse", "fish", "cow", "lion", "tiger", "rabbit", "sheep", "eagle"]
COLOURS = ["green", "black", "pink", "blue", "red", "yellow", "purple", "white", "orange", "brown"]
TOPICS = ["river", "mountain", "city", "music", "garden", "winter", "ocean", "forest", "history", "science",
          "market", "school", "football", "language", "island", "village", "engine", "castle", "summer", "bridge",
          "train", "coffee", "moon", "paper", "king", "war", "game", "film", "book", "road", "desert", "kitchen",
          "church", "airport", "hospital", "library", "farm", "factory", "museum", "beach", "computer", "festival",
          "harbour", "prison", "theatre", "volcano", "wedding", "weather", "army", "camera", "circus", "cloud",
          "dance", "election", "family", "garage", "hotel", "jungle", "lake", "painting"]
HELD_OUT = 20  # the last 20 topics: never seen in training

# Recipes (fixed; see README "Preference alignment on the real model").
DPO_RECIPE = ["method.name=lora", "method.lora_r=16", "method.lora_alpha=16", "method.lora_target=all",
              "train.max_steps=16", "train.batch_size=8", "train.learning_rate=1e-3", "train.warmup_steps=0",
              "align.beta=0.1", "align.loss_type=sigmoid,sft", "data.cutoff_len=128"]
GRPO_RECIPE = ["method.name=lora", "method.lora_r=16", "method.lora_alpha=16", "method.lora_target=all",
               "train.max_steps=30", "train.batch_size=8", "train.learning_rate=1e-4", "train.warmup_steps=0",
               "train.lr_scheduler=constant", "align.num_generations=8", "align.max_new_tokens=8",
               "align.temperature=0.8", "align.beta=0.0", "align.rewards=['align_real:yes_or_no']",
               "data.cutoff_len=160", "align.max_prompt_len=96"]
STARTS_YES_NO = re.compile(r"(yes|no)\b", re.IGNORECASE)
ONLY_YES_NO = re.compile(r"(yes|no)\.?", re.IGNORECASE)


def question(topic: str) -> str:
    return f"Is the {topic} bigger than a car? Answer yes or no."


def yes_or_no(prompts, completions, completion_ids, **_) -> list[float]:
    """GRPO reward (align.rewards: align_real:yes_or_no): 0.5 for starting with yes / no, 0.5 more when
    that is the whole answer and the turn ended. TRL's completion ids end with the end-of-turn token
    when the model wrote it; a completion cut at max_new_tokens has none."""
    end = _end_of_turn()
    return [0.5 * bool(STARTS_YES_NO.match(c.strip())) + 0.5 * ended_with_only_yes_no(c, ids[-1:] == [end])
            for c, ids in zip(completions, completion_ids)]


def ended_with_only_yes_no(text: str, ended: bool) -> bool:
    return ended and bool(ONLY_YES_NO.fullmatch(text.strip()))


def _end_of_turn() -> int:
    from transformers import AutoTokenizer

    global END_OF_TURN
    if END_OF_TURN is None:  # SmolLM2's eos is its end-of-turn token, <|im_end|>
        END_OF_TURN = AutoTokenizer.from_pretrained(os.environ.get("ALIGN_REAL_MODEL", MODEL)).eos_token_id
    return END_OF_TURN


END_OF_TURN = None


def load() -> float:
    return round(os.getloadavg()[0], 2)


def config(model: Path, data: Path, out: Path, stage: str, recipe: list[str]):
    from tunekit.config import load_config

    return load_config(None, [f"model.name_or_path={model}", f"data.path={data}", f"train.stage={stage}",
                              f"train.output_dir={out}", "train.report_to=[]", "train.logging_steps=1",
                              f"train.seed={SEED}", "train.overwrite=true", *recipe])


def pairs(topics: list[str], rng: random.Random) -> list[dict]:
    return [{"conversations": [{"from": "human", "value": f"Name one thing about the {t}."}],
             "chosen": {"from": "gpt", "value": rng.choice(ANIMALS)},
             "rejected": {"from": "gpt", "value": rng.choice(COLOURS)}} for t in topics]


def is_animal(answer: str) -> bool:
    return answer.strip().strip(".!").strip().lower() in ANIMALS


def answers(target: str, prompts: list[str], base: bool = False) -> list[str]:
    from tunekit.infer.engine import Engine, GenerationParams

    with Engine.load(target, base=base) as engine:
        replies = engine.batch([[{"role": "user", "content": p}] for p in prompts],
                               GenerationParams(max_new_tokens=8), batch_size=len(prompts))
    return [r.text for r in replies]


def run_dpo(model: Path, work: Path) -> dict:
    from tunekit.config import DatasetSpec
    from tunekit.data.align_data import build_dataset
    from tunekit.eval.preference import preference_scores
    from tunekit.infer.target import chat_template
    from tunekit.model.multi import load_adapters
    from tunekit.rundir import read_run
    from tunekit.train.run import train

    started, load_start = time.perf_counter(), load()
    rng = random.Random(SEED)
    train_topics, test_topics = TOPICS[:-HELD_OUT], TOPICS[-HELD_OUT:]
    (work / "dpo_train.json").write_text(json.dumps(pairs(train_topics * 3, rng)))
    (work / "dpo_test.json").write_text(json.dumps(pairs(test_topics * 2, rng)))
    cfg = config(model, work / "dpo_train.json", work / "dpo", "dpo", DPO_RECIPE)
    t0 = time.perf_counter()
    run = train(cfg)
    train_seconds = time.perf_counter() - t0

    policy, tokenizer = load_adapters([run], dtype="fp32")
    template = chat_template(tokenizer, read_run(run))
    held_out, _, _ = build_dataset(cfg, [DatasetSpec(str(work / "dpo_test.json"))], template, "pairs")
    tuned = preference_scores(policy, held_out)
    with policy.disable_adapter():
        base = preference_scores(policy, held_out)
    del policy
    prompts = [f"Name one thing about the {t}." for t in test_topics]
    base_answers, tuned_answers = answers(str(run), prompts, base=True), answers(str(run), prompts)
    return {"train_pairs": len(train_topics) * 3, "held_out_pairs": len(held_out), "recipe": DPO_RECIPE,
            "accuracy_before": base.accuracy, "accuracy_after": tuned.accuracy,
            "implicit_reward_accuracy_after": tuned.implicit_accuracy,
            "follows_before": sum(map(is_animal, base_answers)) / len(prompts),
            "follows_after": sum(map(is_animal, tuned_answers)) / len(prompts),
            "answers": [{"prompt": p, "base": b, "tuned": t} for p, b, t in zip(prompts, base_answers, tuned_answers)],
            "train_seconds": round(train_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
            "load_average": [load_start, load()]}


def in_format(target: str, topics: list[str], base: bool = False) -> float:
    """Share of greedy answers that are exactly yes / no and end the turn (the reward's full format)."""
    from tunekit.infer.engine import Engine, GenerationParams

    with Engine.load(target, base=base) as engine:
        replies = engine.batch([[{"role": "user", "content": question(t)}] for t in topics],
                               GenerationParams(max_new_tokens=8), batch_size=len(topics))
    return sum(ended_with_only_yes_no(r.text, r.finish_reason == "stop") for r in replies) / len(topics)


def run_grpo(model: Path, work: Path) -> dict:
    from tunekit.train.run import train

    started, load_start = time.perf_counter(), load()
    os.environ["ALIGN_REAL_MODEL"] = str(model)
    rows = [{"prompt": question(t)} for t in TOPICS[:-HELD_OUT]]
    (work / "grpo_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(model, work / "grpo_prompts.jsonl", work / "grpo", "grpo", GRPO_RECIPE)
    run = train(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in records if "reward" in r]
    fifth = max(len(rewards) // 5, 1)
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    held_out = TOPICS[-HELD_OUT:]
    return {"prompts": len(rows), "recipe": GRPO_RECIPE, "steps": len(rewards), "reward_first_fifth": first,
            "reward_last_fifth": last, "reward_gain": last - first, "rewards": rewards,
            "format_before": in_format(str(run), held_out, base=True), "format_after": in_format(str(run), held_out),
            "held_out_prompts": len(held_out), "seconds": round(time.perf_counter() - started, 1),
            "load_average": [load_start, load()]}


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['cores']} CPU cores, model {result['model']}, seed {SEED}.", ""]
    if "dpo" in result:
        d = result["dpo"]
        lines += [row("DPO (LoRA), held-out", "before", "after", "target"), "|---|---:|---:|---:|",
                  row(f"preference accuracy ({d['held_out_pairs']} pairs)", f"{d['accuracy_before']:.0%}",
                      f"{d['accuracy_after']:.0%}", "~50% -> >= 90%"),
                  row("implicit-reward accuracy (policy vs base)", "—",
                      f"{d['implicit_reward_accuracy_after']:.0%}", ">= 90%"),
                  row(f"greedy answers that are an animal ({len(d['answers'])} prompts)",
                      f"{d['follows_before']:.0%}", f"{d['follows_after']:.0%}", ">= 80%"),
                  row("seconds: training, whole part", d["train_seconds"], d["seconds"], ""),
                  row("load average (1 min): start, end", *d["load_average"], ""), ""]
    if "grpo" in result:
        g = result["grpo"]
        lines += [row("GRPO (LoRA), reward yes_or_no in [0, 1]", "first 20% of steps", "last 20%",
                      "gain (target >= 0.3)"), "|---|---:|---:|---:|",
                  row(f"mean reward over {g['steps']} steps", f"{g['reward_first_fifth']:.2f}",
                      f"{g['reward_last_fifth']:.2f}", f"{g['reward_gain']:+.2f}"),
                  row(f"held-out greedy answers exactly yes/no, turn ended ({g['held_out_prompts']}): before, after",
                      f"{g['format_before']:.0%}", f"{g['format_after']:.0%}", ""),
                  row("seconds (whole part); load average (1 min): start, end", g["seconds"],
                      *g["load_average"]), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tunekit-align-real"))
    parser.add_argument("--only", choices=["dpo", "grpo"])
    parser.add_argument("--out", type=Path, default=RESULTS / "align_real.json")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"error: {args.model} is not a model directory (make demo imports SmolLM2 there)", file=sys.stderr)
        return 1
    setup()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model.name, "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
              "seed": SEED}
    if args.only in (None, "dpo"):
        result["dpo"] = run_dpo(args.model.resolve(), args.workdir)
    if args.only in (None, "grpo"):
        result["grpo"] = run_grpo(args.model.resolve(), args.workdir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
