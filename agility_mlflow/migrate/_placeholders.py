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


def restore_placeholders(text: str, variables: Iterable[str], fmt: Format = "mustache") -> tuple[str, list[str]]:
    """``text`` with renamed placeholders of ``variables`` written back as format ``fmt`` writes them.

    Recognized: ``{$QUESTION}``, ``{question}``, ``{{ Question }}``, ``${question}`` (any case). They
    become ``{{question}}`` (mustache), ``{question}`` (fstring) or ``{{ question }}`` (jinja2): a
    rewriter that answers an f-string template in mustache still gives an f-string template.

    Example:
        >>> restore_placeholders("Q: {$QUESTION} in {Context}", ["question", "context"])
        ('Q: {{question}} in {{context}}', ['{$QUESTION} -> {{question}}', '{Context} -> {{context}}'])
        >>> restore_placeholders("Q: {{question}} in {context}", ["question", "context"], "fstring")
        ('Q: {question} in {context}', ['{{question}} -> {question}'])
    """
    repairs: list[str] = []
    for name in sorted(variables, key=len, reverse=True):
        pattern = re.compile(r"\{\{\s*%s\s*\}\}|\$\{%s\}|\{\$?%s\}" % ((re.escape(name),) * 3), re.IGNORECASE)
        written = _formats.show(name, fmt)

        def put_back(match: re.Match[str], name: str = name, written: str = written) -> str:
            found = match.group(0)
            if _right(found, name, fmt):
                return found  # already right, spacing aside
            repairs.append(f"{found} -> {written}")
            return written

        text = pattern.sub(put_back, text)
    return text, repairs


def _right(found: str, name: str, fmt: Format) -> bool:
    """Whether ``found`` already is variable ``name`` in format ``fmt`` (spacing inside mustache or Jinja2 braces aside)."""
    if fmt == "fstring":
        return found == "{" + name + "}"
    valid = PLACEHOLDER.fullmatch(found) if fmt == "mustache" else re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", found)
    return valid is not None and valid.group(1) == name


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
