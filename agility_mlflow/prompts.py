"""Prompt templates with ``{{variable}}`` placeholders: parsing, checking and rendering.

Rendering is a single pass, so braces inside data values stay data: a context that contains
``{{question}}`` is never expanded.

Example:
    >>> t = Template.from_text("qa", "Context: {{context}}\\nQ: {{ question }}", system="Be brief.")
    >>> sorted(t.variables)
    ['context', 'question']
    >>> t.render({"context": "x={{question}}", "question": "y?"})[1]["content"]
    'Context: x={{question}}\\nQ: y?'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agility_mlflow.errors import InputError

REGISTRY_SCHEME = "prompts:/"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_BRACES = re.compile(r"\{\{|\}\}")


@dataclass(frozen=True)
class Template:
    """A prompt: a user message and an optional system message, both of which may hold placeholders."""

    name: str
    user: str
    system: str | None = None
    origin: str = "inline"
    """Where the text came from (a file name, ``inline`` or a ``prompts:/`` URI), for error messages."""
    registry_uri: str | None = None
    """Set when the text was loaded from the Prompt Registry: runs link to that version as it is."""

    @classmethod
    def from_text(
        cls, name: str, user: str, system: str | None = None, origin: str = "inline", registry_uri: str | None = None
    ) -> Template:
        """Build a template, failing on malformed placeholders such as ``{{question}`` or ``{{ 1x }}``."""
        for part in (system, user):
            if part is not None:
                _check_balanced(name, origin, part)
        if not user.strip():
            raise InputError(f"prompt '{name}' ({origin}): the template is empty")
        return cls(name, user, system, origin, registry_uri)

    @property
    def variables(self) -> frozenset[str]:
        text = self.user + (self.system or "")
        return frozenset(PLACEHOLDER.findall(text))

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages with every placeholder replaced by ``str(values[name])``."""
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": _substitute(self.system, values)})
        messages.append({"role": "user", "content": _substitute(self.user, values)})
        return messages

    def registry_template(self) -> str | list[dict[str, str]]:
        """The form the MLflow Prompt Registry stores: text, or a chat list when a system message is set."""
        if self.system is None:
            return self.user
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def check_columns(self, columns: set[str] | list[str], dataset_name: str) -> None:
        """Fail before any model call when a placeholder has no dataset column."""
        missing = sorted(self.variables - set(columns))
        if missing:
            available = ", ".join(sorted(columns))
            raise InputError(
                f"prompt '{self.name}' ({self.origin}): placeholder '{{{{{missing[0]}}}}}' has no column in "
                f"{dataset_name} (columns: {available})"
            )


def load_template(name: str, template: str, system: str | None, base_dir: Path, tracking_uri: str | None = None) -> Template:
    """A template from config values, each a file path relative to ``base_dir`` or inline text.

    ``template`` may also be a Prompt Registry URI (``prompts:/NAME/VERSION`` or ``prompts:/NAME@ALIAS``),
    read from the registry at ``tracking_uri``; a chat prompt there brings its own system message.
    """
    if template.startswith(REGISTRY_SCHEME):
        return _from_registry(name, template, system, base_dir, tracking_uri)
    user_text, origin = _file_or_text(template, base_dir, name)
    system_text = _file_or_text(system, base_dir, name)[0] if system is not None else None
    return Template.from_text(name, user_text, system_text, origin)


def _from_registry(name: str, uri: str, system: str | None, base_dir: Path, tracking_uri: str | None) -> Template:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        stored = MlflowClient(tracking_uri=tracking_uri).load_prompt(uri)
    except MlflowException as exc:
        raise InputError(f"prompt '{name}': cannot load {uri} from the Prompt Registry: {str(exc).splitlines()[0]}") from None
    if stored is None:
        raise InputError(f"prompt '{name}': {uri} is not in the Prompt Registry")
    content = stored.template
    if isinstance(content, str):
        system_text = _file_or_text(system, base_dir, name)[0] if system is not None else None
        user_text = content
    else:
        if system is not None:
            raise InputError(f"prompt '{name}': {uri} is a chat prompt with its own system message; drop 'system'")
        by_role = {m["role"]: m["content"] for m in content}
        user_text, system_text = by_role.get("user", ""), by_role.get("system")
    return Template.from_text(name, user_text, system_text, origin=stored.uri, registry_uri=stored.uri)


def _file_or_text(value: str, base_dir: Path, name: str) -> tuple[str, str]:
    looks_like_path = "\n" not in value and "{{" not in value and Path(value).suffix in {".txt", ".md", ".j2", ".prompt"}
    if not looks_like_path:
        return value, "inline"
    path = (base_dir / value).resolve()
    try:
        return path.read_text(encoding="utf-8"), path.name
    except FileNotFoundError:
        raise InputError(f"prompt '{name}': template file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"prompt '{name}' ({path.name}): not UTF-8 text (byte {exc.start})") from None


def _substitute(text: str, values: Mapping[str, Any]) -> str:
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _check_balanced(name: str, origin: str, text: str) -> None:
    stripped = PLACEHOLDER.sub(lambda m: " " * len(m.group(0)), text)
    stray = _BRACES.search(stripped)
    if stray:
        line = text.count("\n", 0, stray.start()) + 1
        snippet = text[max(0, stray.start() - 10) : stray.end() + 12].replace("\n", " ")
        raise InputError(
            f"prompt '{name}' ({origin}), line {line}: malformed placeholder near '{snippet}' "
            "(use {{variable}} with a letter or _ first)"
        )
