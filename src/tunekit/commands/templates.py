"""tunekit templates [NAME]: the built-in chat templates, or one template's source.

    tunekit templates            one line each: end of turn, tool-call format, reasoning, tokens
    tunekit templates qwen3      the Jinja source of one (to read, or to start a template of your own)

What the list shows is read off each template by the same code that trains with it (ChatTemplate
on a stand-in tokenizer whose eos is written `eos`), not declared beside it.
"""

from __future__ import annotations

from tunekit.errors import ConfigError

_Q, _A = "\u2063question\u2063", "\u2063answer\u2063"
_R1, _R2 = "\u2063reasoning one\u2063", "\u2063reasoning two\u2063"


def add_arguments(parser):
    parser.add_argument("name", nargs="?", help="a built-in template: print its source")


def run(args) -> int:
    from tunekit.data.templates import builtin_names, builtin_source

    if args.name:
        if args.name not in builtin_names():
            raise ConfigError(f"no built-in template '{args.name}': choose one of {', '.join(builtin_names())}")
        print(builtin_source(args.name), end="")
        return 0
    rows = [("name", "end of turn", "tool calls", "reasoning", "")]
    rows += [describe(name) for name in builtin_names()]
    widths = [max(len(row[k]) for row in rows) for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if row[4]:
            print(f"{'':{widths[0]}}  tokens: {row[4]}")
    print("\nA tokenizer lacking a template's tokens gets them added. Use one with model.template: NAME;\n"
          "`tunekit templates NAME` prints its source.")
    return 0


def describe(name: str) -> tuple[str, str, str, str, str]:
    """(name, end of turn, tool-call format, reasoning format, special tokens) of a built-in; a family
    "(as text)": the template has no tool branch, tunekit writes the calls as that family's text."""
    from tunekit.data.templates import BUILTIN_SPECIAL_TOKENS, load_template

    template = load_template(standin_tokenizer(), name)
    eot = template.eot_text.strip()
    if template.turn_tags:  # no token of its own: the tag of the next turn, which the model emits
        eot = "next role tag: " + " or ".join(tag.strip() for tag in template.turn_tags.values())
    tools = template.family.name if template.native_tool_calls else f"{template.family.name} (as text)"
    return name, "eos" if eot == "<eos>" else eot, tools, reasoning_format(template), \
        " ".join(BUILTIN_SPECIAL_TOKENS[name])


def reasoning_format(template) -> str:
    """How a template writes reasoning: kept in the last answer, stripped from earlier ones, opened by
    the generation prompt, and the enable_thinking switch."""
    def turn(reasoning):
        return [{"role": "user", "content": _Q}, {"role": "assistant", "content": _A, "reasoning_content": reasoning}]

    last = _R1 in template.render(turn(_R1))
    opened = template.render(turn(_R1)[:1], add_generation_prompt=True).endswith("<think>\n")
    history = _R1 in template.render(turn(_R1) + turn(_R2))
    if not (last or opened):
        return "-"
    parts = ["<think>, opened by the prompt" if opened else "<think>"]
    if not history:
        parts.append("stripped from history")
    if "enable_thinking" in template.source:
        parts.append("enable_thinking")
    return "; ".join(parts)


def standin_tokenizer():
    """A word-level tokenizer with only <bos>/<eos>: enough to render and read a template."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                   unk_token="<unk>", bos_token="<bos>", eos_token="<eos>")
