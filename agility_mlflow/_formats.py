"""The three template formats a prompt may be written in, each with the same four operations.

- ``mustache`` (the default, MLflow's own): ``{{variable}}``; single braces are text.
- ``fstring``: Python ``str.format`` fields ``{variable}``; ``{{`` and ``}}`` are literal braces.
- ``jinja2``: ``{{ variable }}``, filters and ``{% ... %}`` blocks, rendered in Jinja2's sandbox with
  ``StrictUndefined``, so a misspelt variable is an error and never an empty string.

Every format renders in a single pass: braces inside data values stay data.

Example:
    >>> fields("Context: {CONTEXT}\\nQ: {QUERY} {{literal}}", "fstring")
    ['CONTEXT', 'QUERY']
    >>> render("{q} costs {{$1}}", "fstring", {"q": "{x}"})
    '{x} costs {$1}'
    >>> render("{% for c in ctx %}[{{ c|upper }}]{% endfor %}", "jinja2", {"ctx": ["a", "b"]})
    '[A][B]'
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from typing import Any, Literal

Format = Literal["mustache", "fstring", "jinja2"]
FORMATS: tuple[Format, ...] = ("mustache", "fstring", "jinja2")

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# MLflow renders a registry prompt with Jinja2 only when it holds a {% %} block; this empty one marks it.
JINJA2_MARKER = "{% if true %}{% endif %}"


class TemplateSyntaxError(ValueError):
    """A template that is not valid in its format; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def check(text: str, fmt: Format) -> None:
    """Raise :class:`TemplateSyntaxError` unless ``text`` is a valid template of format ``fmt``."""
    if fmt == "mustache":
        stripped = PLACEHOLDER.sub(lambda m: " " * len(m.group(0)), text)
        stray = _BRACES.search(stripped)
        if stray:
            snippet = text[max(0, stray.start() - 10) : stray.end() + 12].replace("\n", " ")
            raise TemplateSyntaxError(f"malformed placeholder near '{snippet}' (use {{{{variable}}}} with a letter or _ first)",
                                      _line(text, stray.start()))
    elif fmt == "fstring":
        _fstring_parts(text)
    else:
        _jinja2_parse(text)


def fields(text: str, fmt: Format) -> list[str]:
    """The variable names ``text`` uses in format ``fmt``, in order of first use; [] when it is not valid there."""
    try:
        if fmt == "mustache":
            check(text, fmt)
            found = PLACEHOLDER.findall(text)
        elif fmt == "fstring":
            found = [name for _, name in _fstring_parts(text) if name is not None]
        else:
            from jinja2 import meta

            found = sorted(meta.find_undeclared_variables(_jinja2_parse(text)))
    except TemplateSyntaxError:
        return []
    return list(dict.fromkeys(found))


def render(text: str, fmt: Format, values: Mapping[str, Any]) -> str:
    """``text`` with its variables replaced by ``values`` (``str()`` of each; Jinja2 sees the values themselves)."""
    if fmt == "mustache":
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
    if fmt == "fstring":
        return "".join(literal + (str(values[name]) if name is not None else "") for literal, name in _fstring_parts(text))
    return _jinja2_template(text).render(**values)


def show(name: str, fmt: Format) -> str:
    """How variable ``name`` is written in format ``fmt``, for messages."""
    return f"{{{name}}}" if fmt == "fstring" else f"{{{{{name}}}}}" if fmt == "mustache" else f"{{{{ {name} }}}}"


def to_registry(text: str, fmt: Format) -> str:
    """``text`` in a form MLflow's Prompt Registry renders the same way: mustache stays, fstring becomes
    mustache, jinja2 gets the ``{% %}`` marker MLflow recognizes it by (see :func:`registry_format`).

    Example:
        >>> to_registry("{q} {{literal}}", "fstring")
        '{{q}} {literal}'
    """
    if fmt == "mustache":
        return text
    if fmt == "fstring":
        return "".join(literal + (f"{{{{{name}}}}}" if name is not None else "") for literal, name in _fstring_parts(text))
    return text if "{%" in text else JINJA2_MARKER + text


def registry_format(texts: list[str]) -> Format:
    """The format MLflow renders a registry prompt in: Jinja2 when any message has a ``{% %}`` block."""
    return "jinja2" if any("{%" in t and "%}" in t for t in texts) else "mustache"


def _fstring_parts(text: str) -> list[tuple[str, str | None]]:
    """``text`` as (literal, field name) pairs; only plain ``{name}`` fields are allowed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:  # "Single '}' encountered in format string"
        raise TemplateSyntaxError(f"not a Python format string ({exc}; write {{{{ and }}}} for literal braces)", _stray_brace_line(text)) from None
    parts = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (not _IDENTIFIER.fullmatch(name) or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise TemplateSyntaxError(f"field '{shown}' is not a plain {{variable}} (a letter or _ first, no format spec; "
                                      "write {{ and }} for literal braces)", _line(text, text.find(shown)))
        parts.append((literal, name))
    return parts


def _stray_brace_line(text: str) -> int:
    position = re.search(r"(?<!\{)\{(?!\{)[^}]*$|(?<!\})\}(?!\})", text)
    return _line(text, position.start()) if position else 1


@functools.lru_cache(maxsize=1)
def _jinja2_environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    # Prompts are plain text, not HTML: no autoescape; a final newline is part of the prompt.
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _jinja2_parse(text: str) -> Any:
    import jinja2

    try:
        return _jinja2_environment().parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(f"Jinja2 syntax error: {exc.message}", exc.lineno or 1) from None


@functools.lru_cache(maxsize=256)
def _jinja2_template(text: str) -> Any:
    return _jinja2_environment().from_string(text)


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1
