"""Prompt migration by metaprompt: an LLM rewrites the template in the target model's conventions.

This follows Anthropic's Metaprompt technique (a prompt that writes prompts); the text is ours.
"""

from __future__ import annotations

import re

from agility_mlflow.errors import AgilityError

METAPROMPT = """You rewrite prompt templates so that they work best on a new language model.

Target model: {target_model}
{conventions}
Rules:
- Keep the task, the facts and the output format the original asks for.
- Keep every placeholder exactly as written, with its double braces: {placeholders}. Do not add new ones.
- Put instructions first, then the inputs, then what the answer should look like.

Original template:
<template>
{template}
</template>

Reply with a one-paragraph analysis of what you changed inside <analysis></analysis>, then the rewritten
template inside <rewritten_prompt></rewritten_prompt>."""

_CONVENTIONS = {
    "anthropic": "Claude reads best with inputs wrapped in XML tags (e.g. <context>{{context}}</context>) and instructions grouped before them.",
    "amazon": "Amazon Nova reads best with short, explicit instructions in Markdown sections (## Task, ## Input, ## Output format).",
    "meta": "Llama reads best with a direct instruction first and the inputs after it, each under a short label.",
}


def _tagged(name: str, text: str) -> str | None:
    match = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.DOTALL)
    return match.group(1).strip() if match else None


def metaprompt_messages(template: str, variables: list[str], target_model: str) -> list[dict[str, str]]:
    """The chat messages that ask a model to rewrite ``template`` for ``target_model``.

    Example:
        >>> messages = metaprompt_messages("Q: {{question}}", ["question"], "anthropic.claude-3-5-haiku")
        >>> "XML tags" in messages[0]["content"] and "{{question}}" in messages[0]["content"]
        True
    """
    family = next((f for f in _CONVENTIONS if f in target_model.lower()), None)
    conventions = _CONVENTIONS[family] if family else "Use the conventions its provider documents."
    placeholders = ", ".join("{{" + v + "}}" for v in sorted(variables)) or "(none)"
    text = METAPROMPT.format(target_model=target_model, conventions=conventions, placeholders=placeholders, template=template)
    return [{"role": "user", "content": text}]


def parse_rewrite(output: str) -> tuple[str, str]:
    """The rewritten template and the analysis from the model's reply.

    Example:
        >>> parse_rewrite("<analysis>Tagged.</analysis><rewritten_prompt>Q: {{question}}</rewritten_prompt>")
        ('Q: {{question}}', 'Tagged.')
    """
    rewritten = _tagged("rewritten_prompt", output)
    if not rewritten:
        raise AgilityError("the metaprompt model returned no <rewritten_prompt>: not registered")
    return rewritten, _tagged("analysis", output) or ""
