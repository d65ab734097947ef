"""Regenerate the data tunekit ships for `tunekit demo`: the tokenizer corpus and the NER task.

    python scripts/make_demo_data.py                       # both, from ../shared/data
    python scripts/make_demo_data.py --only demo           # just the NER task (needs no source data)

Corpus (src/tunekit/assets/corpus/): excerpts of LLaMA-Factory's demo data (Apache-2.0):
wiki_en.txt, alpaca_zh.json and alpaca_en.json train the demo tokenizer; general_heldout.txt is
general text from other parts of the same files, never trained on, for a perplexity probe.

Demo task (src/tunekit/assets/demo/): synthetic Chinese entity extraction in the
instruct/query/answer shape, made from name and place lists and sentence patterns with a
fixed seed. Every training row draws new person names, so they cannot be
memorised; the test set uses person names that never occur in training and sentences that
are not training sentences, so it measures copying entities out of new sentences.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "src" / "tunekit" / "assets"
SOURCE_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEED = 20240611
TRAIN_ROWS = 3000
TEST_ROWS = 100

INSTRUCT = "找出句中的人名和地名"
PERSON, PLACE = "人名", "地名"
NONE_ANSWER = "没有"

SURNAMES = list("张王李赵刘陈杨黄周吴徐孙马朱胡郭何林高罗郑梁谢宋唐韩冯邓曹彭曾肖田董潘袁蔡蒋余杜叶程魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金贾夏方邹熊白孟秦邱侯江薛雷龙史陶贺毛郝顾")
# Given names: one character, or a common two-character name. No given name begins a word that
# may follow a name (明 of 明天 would make 张伟明天 ambiguous).
GIVEN_CHARS = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛超秀霞平刚英华玉萍红鹏辉建飞鑫波斌宇浩凯健俊帆旭宁欢阳晨雪琳晶婷博志海云峰东佳丹亮鸣倩颖慧然松")
GIVEN_PAIRS = [
    "建国", "秀英", "志强", "桂英", "丽娟", "海燕", "晓明", "俊杰", "子涵", "欣怡", "浩然", "雨轩",
    "梓萱", "宇航", "思远", "佳怡", "文博", "嘉怡", "国华", "春梅", "振华", "淑珍", "玉兰", "家豪",
    "志明", "美玲", "少华", "晓东", "红霞", "德明",
]
PLACES = [
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州",
    "长沙", "郑州", "青岛", "沈阳", "大连", "厦门", "昆明", "哈尔滨", "济南", "福州", "合肥", "南昌",
    "贵阳", "兰州", "太原", "南宁", "海口", "拉萨", "长春", "无锡", "宁波", "温州", "珠海", "桂林",
    "洛阳", "扬州", "绍兴", "三亚", "大理", "丽江", "烟台", "徐州", "常州", "泉州",
]
TIMES = ["昨天", "今天", "明天", "上周", "下个月", "去年", "周末", "早上"]
THINGS = ["这本书", "那部电影", "这家饭店", "新买的手机", "这首歌", "那个公园", "这道菜", "今天的会议"]
OPINIONS = ["很有意思", "不太好", "非常好", "有点贵", "很受欢迎", "让人难忘"]

# Sentence patterns: {p}, {q} persons; {l}, {m} places; {t} time; {x} thing; {o} opinion.
PATTERNS = [
    "{p}{t}去了{l}。", "{p}住在{l}。", "{p}和{q}在{l}见面。", "{p}{t}从{l}来到{m}。",
    "{p}打算{t}去{l}旅游。", "{l}的{x}{o}。", "{p}觉得{x}{o}。", "{p}给{q}打了电话。",
    "{t}{p}在{l}工作。", "{p}的老家在{l}。", "我们{t}去{l}。", "{p}说{l}比{m}热。",
    "{p}和{q}{t}一起吃饭。", "{t}{p}见到了{q}。", "{x}{o}。", "{t}我们讨论了{x}。",
    "{p}{t}到{l}出差。", "{l}和{m}都很美。", "大家都说{x}{o}。", "{p}在{l}遇到了{q}。",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["corpus", "demo"], help="regenerate just one of the two")
    parser.add_argument("--source", type=Path, default=SOURCE_DATA, help="folder with LLaMA-Factory demo data")
    args = parser.parse_args()
    if args.only != "demo":
        write_corpus(args.source, ASSETS / "corpus")
    if args.only != "corpus":
        write_demo(ASSETS / "demo")


# --- corpus ---------------------------------------------------------------------------------


def write_corpus(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    wiki = (source / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()
    alpaca_zh = json.loads((source / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    alpaca_en = json.loads((source / "alpaca_en_demo.json").read_text(encoding="utf-8"))

    (out / "wiki_en.txt").write_text(_sentences_up_to("\n".join(wiki[:3]), 80_000) + "\n", encoding="utf-8")
    _write_json(out / "alpaca_zh.json", alpaca_zh[:200])
    _write_json(out / "alpaca_en.json", alpaca_en[:60])
    heldout_en = _sentences_up_to(wiki[10], 25_000)
    heldout_zh = _sentences_up_to("\n\n".join(row["output"] for row in alpaca_zh[600:]), 25_000)
    (out / "general_heldout.txt").write_text(heldout_en + "\n\n" + heldout_zh + "\n", encoding="utf-8")


def _sentences_up_to(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that ends a sentence and is at most `max_bytes` in UTF-8."""
    prefix = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    ends = [match.end() for match in re.finditer(r"[.!?。！？]", prefix)]
    return prefix[: ends[-1]] if ends else prefix


def _write_json(path: Path, rows: list) -> None:
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


# --- demo task ------------------------------------------------------------------------------


def write_demo(out: Path) -> None:
    rng = random.Random(SEED)
    test = _unique_rows(rng, lambda: _random_name(rng), TEST_ROWS, exclude=set())
    test_names = {entity for row in test for entity in _entities(row, PERSON)}
    train = _unique_rows(rng, lambda: _random_name(rng, avoid=test_names), TRAIN_ROWS, exclude={r["query"] for r in test})
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "ner_train.jsonl", train)
    _write_jsonl(out / "ner_test.jsonl", test)


def _random_name(rng: random.Random, avoid: set[str] = frozenset()) -> str:
    """A surname and a given name, drawn afresh for each sentence so that full names cannot be memorised."""
    while True:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN_CHARS if rng.random() < 0.6 else GIVEN_PAIRS)
        if name not in avoid:
            return name


def _unique_rows(rng: random.Random, draw_name, count: int, exclude: set[str]) -> list[dict]:
    rows, seen = [], set(exclude)
    while len(rows) < count:
        row = _make_row(rng, draw_name)
        if row["query"] not in seen:
            seen.add(row["query"])
            rows.append(row)
    return rows


def _make_row(rng: random.Random, draw_name) -> dict:
    pattern = rng.choice(PATTERNS)
    persons, places = _two_different(draw_name), rng.sample(PLACES, 2)
    slots = {"p": persons[0], "q": persons[1], "l": places[0], "m": places[1],
             "t": rng.choice(TIMES), "x": rng.choice(THINGS), "o": rng.choice(OPINIONS)}
    query = pattern.format(**slots)
    kinds = {"p": PERSON, "q": PERSON, "l": PLACE, "m": PLACE}
    entities = [f"{slots[key]}_{kinds[key]}" for key in re.findall(r"\{(\w)\}", pattern) if key in kinds]
    return {"instruct": INSTRUCT, "query": query, "answer": "\n".join(entities) or NONE_ANSWER}


def _two_different(draw) -> list[str]:
    first, second = draw(), draw()
    while second == first:
        second = draw()
    return [first, second]


def _entities(row: dict, kind: str) -> list[str]:
    return [line.rsplit("_", 1)[0] for line in row["answer"].splitlines() if line.endswith("_" + kind)]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
