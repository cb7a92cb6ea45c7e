"""Keep every placeholder of the source template through a migration (``{{variable}}``, Jinja2 ``{{ variable }}``).

Rewriters rename placeholders (the AWS reference notebooks turned ``{query}`` into ``{$QUERY}``).
Obvious renamings of a known variable are put back; a variable that is still missing, or one the
rewriter invented, rejects the result: it is never registered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from agility_mlflow import _formats
from agility_mlflow._formats import PLACEHOLDER, Format
from agility_mlflow.errors import AgilityError


def restore_placeholders(text: str, variables: Iterable[str]) -> tuple[str, list[str]]:
    """``text`` with renamed placeholders of ``variables`` written back as ``{{variable}}``.

    Recognized: ``{$QUESTION}``, ``{question}``, ``{{ Question }}``, ``${question}`` (any case).

    Example:
        >>> restore_placeholders("Q: {$QUESTION} in {Context}", ["question", "context"])
        ('Q: {{question}} in {{context}}', ['{$QUESTION} -> {{question}}', '{Context} -> {{context}}'])
    """
    repairs: list[str] = []
    for name in sorted(variables, key=len, reverse=True):
        pattern = re.compile(r"\{\{\s*%s\s*\}\}|\$\{%s\}|\{\$?%s\}" % ((re.escape(name),) * 3), re.IGNORECASE)

        def put_back(match: re.Match[str], name: str = name) -> str:
            found = match.group(0)
            valid = PLACEHOLDER.fullmatch(found)
            if valid and valid.group(1) == name:
                return found  # already right, spacing aside
            repairs.append(f"{found} -> {{{{{name}}}}}")
            return "{{" + name + "}}"

        text = pattern.sub(put_back, text)
    return text, repairs


def check_placeholders(text: str, variables: Iterable[str], what: str, fmt: Format = "mustache") -> None:
    """Fail unless ``text`` has exactly the placeholders ``variables`` (as format ``fmt`` reads them).

    Example:
        >>> check_placeholders("{% if context %}{{ context }}{% endif %} {{ question|trim }}", ["context", "question"], "x", "jinja2")
    """
    wanted = set(variables)
    try:
        _formats.check(text, fmt)
    except _formats.TemplateSyntaxError as exc:
        raise AgilityError(f"{what} is not a valid {fmt} template (line {exc.line}: {exc}): not registered") from None
    found = set(_formats.fields(text, fmt))
    missing, invented = sorted(wanted - found), sorted(found - wanted)
    if missing or invented:
        parts = []
        if missing:
            parts.append("lost " + ", ".join("{{" + v + "}}" for v in missing))
        if invented:
            parts.append("invented " + ", ".join("{{" + v + "}}" for v in invented))
        raise AgilityError(f"{what} {' and '.join(parts)}: not registered")
