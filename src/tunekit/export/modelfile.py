"""An Ollama Modelfile for an exported GGUF: the run's chat template as an Ollama (Go) template,
its stop tokens and its system prompt.

    parts = template_parts(template)          # what the Jinja template puts around each message
    text = modelfile("model-f16.gguf", parts, stops=["<|im_end|>"], system="...")

Jinja cannot be translated to Go's template language in general; what can be done
faithfully is to read, from the template's own renderings of a sample conversation, the
text it puts before and after a system, user and assistant message and the generation
prompt, and to write those around Ollama's `.System`, `.Messages`, `.Role` and
`.Content`. A template whose renderings do not decompose that way (one that rewrites
history, or puts a turn's text elsewhere than between its prefix and suffix) is refused,
and `TemplateParts.render` reproduces the template so the decomposition is checked, not
assumed. A template that adds a default system prompt when there is none gives that
prompt as the Modelfile's SYSTEM.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunekit.errors import TunekitError

MARK = "\u2063TK{}\u2063"  # an invisible separator around a number: text no template writes itself


@dataclass
class TemplateParts:
    system: tuple[str, str]  # (before, after) a system message
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str  # what opens the answer (add_generation_prompt)
    default_system: str | None  # what the template says when a conversation has no system message
    always_system: bool = False  # the template writes a system block even with no system prompt at all

    def render(self, messages: list[dict], system: str | None = None) -> str:
        """The prompt the Ollama template writes (the same structure, in Python) for checking."""
        system = next((m["content"] for m in messages if m["role"] == "system"), system or self.default_system)
        text = f"{self.system[0]}{system or ''}{self.system[1]}" if system or self.always_system else ""
        for m in messages:
            if m["role"] in ("user", "assistant"):
                before, after = getattr(self, m["role"])
                text += f"{before}{m['content']}{after}"
        return text + self.generation


def template_parts(render) -> TemplateParts:
    """Decompose a template from its renderings; `render(messages, add_generation_prompt)` returns text."""
    s, u1, a1, u2 = (MARK.format(i) for i in range(4))
    convo = [{"role": "system", "content": s}, {"role": "user", "content": u1}, {"role": "assistant", "content": a1},
             {"role": "user", "content": u2}]
    full, closed = render(convo, True), render(convo, False)
    sys_before, rest = _cut(full, s)
    sys_user, rest = _cut(rest, u1)
    user_asst, rest = _cut(rest, a1)
    asst_user, gen_tail = _cut(rest, u2)
    _, closed_tail = _cut(closed, u2)
    user_after = closed_tail
    generation = _drop_prefix(gen_tail, user_after)
    assistant_after = _cut(render(convo[:3], False), a1)[1]
    user_before = _drop_prefix(asst_user, assistant_after)
    assistant_before = _drop_prefix(user_asst, user_after)
    system_after = _drop_suffix(sys_user, user_before)
    parts = TemplateParts((sys_before, system_after), (user_before, user_after), (assistant_before, assistant_after),
                          generation, None)
    plain = render(convo[1:2], True)
    head = _drop_suffix(_cut(plain, u1)[0], user_before)
    if head:
        if not (head.startswith(sys_before) and head.endswith(system_after)):
            raise TunekitError("the chat template writes text before the first user message that is not a system "
                               "block; it cannot be written as an Ollama template")
        parts.default_system = head[len(sys_before): len(head) - len(system_after)] or None
        parts.always_system = True
    if parts.render(convo, None) != full:
        raise TunekitError("the chat template does not put each message between a fixed prefix and suffix "
                           "(it rewrites the conversation); it cannot be written as an Ollama template")
    return parts


def _cut(text: str, mark: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise TunekitError("the chat template drops or repeats a message's text; it cannot be written as an "
                           "Ollama template")
    before, after = text.split(mark)
    return before, after


def _drop_prefix(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise TunekitError("the chat template closes a message differently depending on what follows it; it cannot "
                           "be written as an Ollama template")
    return text[len(prefix):]


def _drop_suffix(text: str, suffix: str) -> str:
    if not text.endswith(suffix):
        raise TunekitError("the chat template opens a user message differently depending on what precedes it; it "
                           "cannot be written as an Ollama template")
    return text[: len(text) - len(suffix)]


def go_template(parts: TemplateParts) -> str:
    """Ollama's TEMPLATE: the same text around .System and each of .Messages, then the generation prompt."""
    for piece in (*parts.system, *parts.user, *parts.assistant, parts.generation):
        if "{{" in piece or '"""' in piece:
            raise TunekitError("the chat template's text contains '{{' or '\"\"\"', which an Ollama template "
                               "cannot hold literally")
    system = f"{parts.system[0]}{{{{ .System }}}}{parts.system[1]}"
    return (("{{ if .System }}" + system + "{{ end }}" if not parts.always_system else system) +
            "{{ range .Messages }}"
            f'{{{{ if eq .Role "user" }}}}{parts.user[0]}{{{{ .Content }}}}{parts.user[1]}'
            f'{{{{ else if eq .Role "assistant" }}}}{parts.assistant[0]}{{{{ .Content }}}}{parts.assistant[1]}'
            f"{{{{ end }}}}{{{{ end }}}}{parts.generation}")


def modelfile(gguf_name: str, parts: TemplateParts, stops: list[str], system: str | None) -> str:
    """The Modelfile text; FROM names the GGUF beside it."""
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{go_template(parts)}"""']
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    system = system or parts.default_system
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
