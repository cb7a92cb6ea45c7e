"""What the reflection model reads and how its reply becomes a prompt.

The reflection model sees the current template, the placeholders it must keep, the SME's criteria,
and, for each failing training sample, its inputs, the answer, the reference, each metric's result
and the judge's reason (rendered by GEPA's own instruction-proposal renderer). Its reply is read
leniently: a JSON object with a ``prompt`` key, a fenced block, ``<prompt>`` tags, or bare text.
Renamed placeholders are put back in the template's own format (migrate's rules: a proposal for an
f-string template stays an f-string template); a placeholder it dropped is appended as a labelled input
line (small models rewrite the instruction and drop the inputs); a proposal that invents one, or is not
valid in that format, is discarded, never evaluated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agility_mlflow import _formats
from agility_mlflow._formats import Format
from agility_mlflow.errors import AgilityError
from agility_mlflow.migrate import check_placeholders, restore_placeholders

REFLECTION_PROMPT = """You improve a prompt template for a language model. This is the template now:
```
<curr_param>
```

Here are examples the model got wrong with this template: the inputs, the model's answer, and feedback
(the reference answer, each metric's result, a judge's reasons):
```
<side_info>
```

Write an improved template. Read the feedback to find what the answers miss (format, units, length,
facts, reasoning) and add clear instructions that fix it for every input, not just these.
{criteria}Rules:
- Keep every placeholder exactly as written{syntax}: {placeholders}. Add no other placeholder.
- Reply with the complete new template inside one ``` block, and nothing else."""

_FENCE = re.compile(r"```[A-Za-z]*\n?(.*?)```", re.DOTALL)
_TAGGED = re.compile(r"<(prompt|template|new_prompt|rewritten_prompt)>\s*(.*?)\s*</\1>", re.DOTALL)


_SYNTAX = {
    "mustache": ", with its double braces",
    "fstring": " (a Python format string: one pair of braces around each placeholder; write a literal brace doubled, {{ or }})",
    "jinja2": " (a Jinja2 template: keep its {% %} blocks valid)",
}


def reflection_template(variables: Sequence[str], criteria: str | None, fmt: Format = "mustache") -> str:
    """GEPA's ``reflection_prompt_template`` (with its ``<curr_param>`` and ``<side_info>`` markers) for a template.

    The placeholders are shown as the template's format ``fmt`` writes them, so a proposal keeps that format.

    Example:
        >>> text = reflection_template(["question"], "Answers cite the fiscal year.")
        >>> "{{question}}" in text and "cite the fiscal year" in text and "<side_info>" in text
        True
        >>> "exactly as written (a Python format string" in reflection_template(["question"], None, "fstring")
        True
    """
    placeholders = ", ".join(_formats.show(v, fmt) for v in sorted(variables)) or "(none)"
    block = f"Every new template must respect these criteria:\n{criteria.strip()}\n" if criteria and criteria.strip() else ""
    return REFLECTION_PROMPT.replace("{criteria}", block).replace("{syntax}", _SYNTAX[fmt]).replace("{placeholders}", placeholders)


def render_reflection(current: str, examples: Sequence[Mapping[str, Any]], template: str) -> str:
    """The reflection model's input: ``template`` filled with the current text and the examples, as GEPA renders them."""
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    rendered = InstructionProposalSignature.prompt_renderer(
        {"current_instruction_doc": current, "dataset_with_feedback": list(examples), "prompt_template": template}
    )
    assert isinstance(rendered, str)  # text only: no images in our examples
    return rendered


def parse_proposal(reply: str) -> str:
    """The proposed template in a reflection reply: JSON ``{"prompt": ...}``, a fenced block, ``<prompt>`` tags, or bare text.

    Example:
        >>> parse_proposal('Here it is:\\n```\\nQ: {{question}}\\nAnswer in millions.\\n```')
        'Q: {{question}}\\nAnswer in millions.'
        >>> parse_proposal('{"prompt": "Q: {{question}}"}')
        'Q: {{question}}'
        >>> parse_proposal('<prompt>Q: {{question}}</prompt>')
        'Q: {{question}}'
        >>> parse_proposal('Q: {{question}}')
        'Q: {{question}}'
    """
    text = reply.strip()
    start, end = text.find("{"), text.rfind("}")
    if start == 0 and end == len(text) - 1:
        try:
            value = json.loads(text, strict=False)
        except ValueError:
            value = None
        if isinstance(value, dict):
            found = next((value[k] for k in ("prompt", "template", "new_prompt", "instruction") if isinstance(value.get(k), str)), None)
            if found:
                return found.strip()
    tagged = _TAGGED.search(text)
    if tagged:
        return tagged.group(2).strip()
    fenced = [block.strip() for block in _FENCE.findall(text) if block.strip()]
    if fenced:
        return max(fenced, key=len)  # the template, not a one-line aside
    if text.startswith("```"):  # an unclosed block: the reply was cut off after it opened
        return re.sub(r"^```[A-Za-z]*\n?", "", text).strip()
    return text


def repaired(proposal: str, variables: Sequence[str], what: str, fmt: Format = "mustache") -> tuple[str, list[str]]:
    """``proposal`` with renamed placeholders put back in format ``fmt``; :class:`AgilityError` when one is still lost
    or invented, or the text is not a valid ``fmt`` template.

    Example:
        >>> repaired("Q: {$QUESTION}", ["question"], "proposal")
        ('Q: {{question}}', ['{$QUESTION} -> {{question}}'])
        >>> repaired("Q: {{question}}", ["question"], "proposal", "fstring")
        ('Q: {question}', ['{{question}} -> {question}'])
        >>> repaired("Answer briefly.", ["question"], "proposal")
        ('Answer briefly.\\n\\nQuestion: {{question}}', ['lost {{question}}: appended'])
        >>> repaired("Q: {{question}} {{year}}", ["question"], "proposal")
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.AgilityError: proposal invented {{year}}: not registered
        >>> repaired("  ", ["question"], "proposal")
        Traceback (most recent call last):
        ...
        agility_mlflow.errors.AgilityError: proposal is empty: not registered
    """
    text, repairs = restore_placeholders(proposal, variables, fmt)
    if not text.strip():  # before the inputs are appended: a template of inputs alone is no proposal
        raise AgilityError(f"{what} is empty: not registered")
    text, appended = _append_lost(text, variables, fmt)
    check_placeholders(text, variables, what, fmt)
    return text, repairs + appended


def _append_lost(text: str, variables: Sequence[str], fmt: Format) -> tuple[str, list[str]]:
    """``text`` with each variable it lost appended as a labelled input line, when it parses in ``fmt``.

    Small reflection models often rewrite only the instruction and drop the inputs; the instruction is
    what they were asked for, so the inputs are put back after it rather than the proposal discarded.
    A proposal that invents a variable, or does not parse, is left for :func:`check_placeholders` to refuse.
    """
    try:
        found = set(_formats.fields(text, fmt))
    except _formats.TemplateSyntaxError:
        return text, []
    lost = [name for name in variables if name not in found]
    if not lost:
        return text, []
    lines = [f"{name.replace('_', ' ').capitalize()}: {_formats.show(name, fmt)}" for name in lost]
    return text.rstrip() + "\n\n" + "\n".join(lines), [f"lost {_formats.show(name, fmt)}: appended" for name in lost]
