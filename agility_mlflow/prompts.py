"""Prompt templates: loading, checking against the dataset and rendering, in any of three formats.

``mustache`` (``{{variable}}``, the default and MLflow's own), ``fstring`` (Python ``str.format``
fields ``{variable}``) or ``jinja2`` (sandboxed, undefined variables are errors); see
:mod:`agility_mlflow._formats`. Rendering is a single pass, so braces inside data values stay data: a
context that contains ``{{question}}`` is never expanded.

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

from agility_mlflow import _formats
from agility_mlflow._formats import FORMATS, Format, TemplateSyntaxError
from agility_mlflow.errors import InputError

REGISTRY_SCHEME = "prompts:/"
_FORMAT_NAMES = {"mustache": "{{variable}} placeholder", "fstring": "{variable} field", "jinja2": "Jinja2 variable"}
_FILE_SUFFIX = re.compile(r"\S\.[A-Za-z0-9_]{1,12}$")


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
    format: Format = "mustache"
    """``mustache`` (``{{variable}}``), ``fstring`` (``{variable}``) or ``jinja2``."""

    @classmethod
    def from_text(
        cls,
        name: str,
        user: str,
        system: str | None = None,
        origin: str = "inline",
        registry_uri: str | None = None,
        format: Format = "mustache",
    ) -> Template:
        """Build a template, failing on text that is not valid in its format (``{{question}``, ``{ 1x }``)."""
        if format not in FORMATS:
            raise InputError(f"prompt '{name}' ({origin}): unknown format '{format}' (use {', '.join(FORMATS)})")
        for part in (system, user):
            if part is not None:
                try:
                    _formats.check(part, format)
                except TemplateSyntaxError as exc:
                    raise InputError(f"prompt '{name}' ({origin}), line {exc.line}: {exc}{_other_format_hint(part, format)}") from None
        if not user.strip():
            raise InputError(f"prompt '{name}' ({origin}): the template is empty")
        return cls(name, user, system, origin, registry_uri, format)

    @property
    def registry_name(self) -> str:
        """The Prompt Registry name a new version of this prompt goes under: its loaded version's, else its own.

        Example:
            >>> Template("qa", "Q: {{q}}", registry_uri="prompts:/finance-qa@prod").registry_name, Template("qa", "Q: {{q}}").registry_name
            ('finance-qa', 'qa')
        """
        if self.registry_uri is None:
            return self.name
        return self.registry_uri.removeprefix(REGISTRY_SCHEME).split("/")[0].split("@")[0]

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(self._fields(self.format))

    def _fields(self, fmt: Format) -> list[str]:
        return [*(_formats.fields(self.system, fmt) if self.system else []), *_formats.fields(self.user, fmt)]

    def render(self, values: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages with every placeholder replaced by its value."""
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self._render(self.system, values)})
        messages.append({"role": "user", "content": self._render(self.user, values)})
        return messages

    def _render(self, text: str, values: Mapping[str, Any]) -> str:
        try:
            return _formats.render(text, self.format, values)
        except Exception as exc:  # jinja2's sandbox and undefined errors, a missing key
            raise InputError(f"prompt '{self.name}' ({self.origin}): cannot render sample '{values.get('sample_id')}': "
                             f"{type(exc).__name__}: {exc}") from None

    def registry_form(self) -> Template:
        """This template in a format MLflow's Prompt Registry renders the same way (fstring becomes mustache)."""
        if self.format == "mustache":
            return self
        target: Format = "jinja2" if self.format == "jinja2" else "mustache"
        system = _formats.to_registry(self.system, self.format) if self.system is not None else None
        return Template(self.name, _formats.to_registry(self.user, self.format), system, self.origin, self.registry_uri, target)

    def registry_template(self) -> str | list[dict[str, str]]:
        """The form the MLflow Prompt Registry stores: text, or a chat list when a system message is set."""
        form = self.registry_form()
        if form.system is None:
            return form.user
        return [{"role": "system", "content": form.system}, {"role": "user", "content": form.user}]

    def appended(self, name: str, text: str) -> Template:
        """A template named ``name`` whose user message ends with ``text``, taken literally in any format."""
        literal = {"mustache": text, "fstring": text.replace("{", "{{").replace("}", "}}"),
                   "jinja2": "{% raw %}" + text + "{% endraw %}"}[self.format] if re.search(r"[{}]", text) else text
        return Template.from_text(name, f"{self.user}\n\n{literal}", self.system, self.origin, format=self.format)

    def check_columns(self, columns: set[str] | list[str], dataset_name: str) -> None:
        """Fail before any model call when a placeholder has no dataset column, or there is no placeholder at all."""
        columns = set(columns)
        if not self.variables:
            self._no_placeholder(columns, dataset_name)
        missing = sorted(self.variables - columns)
        if missing:
            available = ", ".join(sorted(columns))
            raise InputError(
                f"prompt '{self.name}' ({self.origin}): placeholder '{_formats.show(missing[0], self.format)}' has no column in "
                f"{dataset_name} (columns: {available})"
            )

    def _no_placeholder(self, columns: set[str], dataset_name: str) -> None:
        """Every sample would get the same prompt: say which format the text seems to be written in, if any."""
        lowered = {c.lower() for c in columns}
        for other in FORMATS:
            named = [f for f in dict.fromkeys(self._fields(other)) if f.lower() in lowered]
            if other != self.format and named:
                shown = ", ".join(_formats.show(f, other) for f in named)
                raise InputError(
                    f"prompt '{self.name}' ({self.origin}): no {_FORMAT_NAMES[self.format]} (format: {self.format}), but {shown} "
                    f"name columns of {dataset_name} in another format: set format: {other}"
                )
        raise InputError(
            f"prompt '{self.name}' ({self.origin}): no {_FORMAT_NAMES[self.format]} (format: {self.format}): every sample would "
            f"get the same prompt; use a column of {dataset_name} (e.g. {_formats.show('question', self.format)})"
        )


def _other_format_hint(text: str, fmt: Format) -> str:
    """``; ... set format: X`` when ``text``, invalid in ``fmt``, is a valid template with fields in format X."""
    plain = set(_formats.PLACEHOLDER.findall(text))  # what a reader sees as variables anyway: no news in the hint
    for other in FORMATS:
        found = _formats.fields(text, other) if other != fmt else []
        if found and not set(found) <= plain:
            shown = ", ".join(_formats.show(f, other) for f in found)
            return f"; it reads as a {other} template with {shown}: set format: {other}"
    return ""


def load_template(
    name: str,
    template: str,
    system: str | None,
    base_dir: Path,
    tracking_uri: str | None = None,
    format: Format = "mustache",
) -> Template:
    """A template from config values, each a file path relative to ``base_dir`` or inline text.

    A value that looks like a path (one line, no braces, a file extension or a ``/``) is always read as
    a file, whatever its extension: a path is never sent to a model as the prompt. ``template`` may also
    be a Prompt Registry URI (``prompts:/NAME/VERSION`` or ``prompts:/NAME@ALIAS``), read from the
    registry at ``tracking_uri`` in the format MLflow renders it in; a chat prompt there brings its own
    system message.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "source.TXT").write_text("Context: {CONTEXT}\\nQ: {QUERY}", encoding="utf-8")
        >>> t = load_template("qa", "source.TXT", None, d, format="fstring")
        >>> t.origin, sorted(t.variables), t.registry_template()
        ('source.TXT', ['CONTEXT', 'QUERY'], 'Context: {{CONTEXT}}\\nQ: {{QUERY}}')
    """
    if template.startswith(REGISTRY_SCHEME):
        return template_from_registry(template, name=name, tracking_uri=tracking_uri, system=system, base_dir=base_dir)
    user_text, origin = _file_or_text(template, base_dir, name)
    system_text = _file_or_text(system, base_dir, name)[0] if system is not None else None
    return Template.from_text(name, user_text, system_text, origin, format=format)


def registry_template_parts(content: str | list[dict[str, str]]) -> tuple[str, str | None, Format]:
    """A stored registry prompt as (user text, system text or None, the format MLflow renders it in)."""
    if isinstance(content, str):
        return content, None, _formats.registry_format([content])
    by_role = {m["role"]: m["content"] for m in content}
    user, system = by_role.get("user", ""), by_role.get("system")
    return user, system, _formats.registry_format([m["content"] for m in content])


def template_from_registry(
    uri: str, *, name: str | None = None, tracking_uri: str | None = None, system: str | None = None, base_dir: Path = Path(".")
) -> Template:
    """A Prompt Registry version (``prompts:/NAME/N`` or ``prompts:/NAME@ALIAS``) as a :class:`Template`.

    The template is named ``name`` (default: its registry name), keeps the version's URI (so it is
    never registered again) and the format MLflow renders it in. ``system`` (a file relative to
    ``base_dir``, or the text) adds a system message to a text prompt; a chat prompt brings its own.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    label = name or uri
    try:
        stored = MlflowClient(tracking_uri=tracking_uri).load_prompt(uri)
    except MlflowException as exc:
        raise InputError(f"prompt '{label}': cannot load {uri} from the Prompt Registry: {str(exc).splitlines()[0]}") from None
    if stored is None:
        raise InputError(f"prompt '{label}': {uri} is not in the Prompt Registry")
    user_text, system_text, fmt = registry_template_parts(stored.template)
    if isinstance(stored.template, str):
        system_text = _file_or_text(system, base_dir, label)[0] if system is not None else None
    elif system is not None:
        raise InputError(f"prompt '{label}': {uri} is a chat prompt with its own system message; drop 'system'")
    return Template.from_text(name or stored.name, user_text, system_text, origin=stored.uri, registry_uri=stored.uri, format=fmt)


def looks_like_path(value: str) -> bool:
    """One line without braces that ends in a file extension, or has no spaces and a ``/``: a file name, not a prompt.

    Example:
        >>> [looks_like_path(v) for v in ("prompts/source.jinja2", "source.TXT", "Q: {{question}}", "Be brief.", "yes/no answers")]
        [True, True, False, False, False]
    """
    value = value.strip()
    if not value or "\n" in value or "{" in value or "}" in value:
        return False
    return bool(_FILE_SUFFIX.search(value)) or (not re.search(r"\s", value) and ("/" in value or "\\" in value))


def _file_or_text(value: str, base_dir: Path, name: str) -> tuple[str, str]:
    if not looks_like_path(value):
        return value, "inline"
    path = (base_dir / value.strip()).resolve()
    try:
        return path.read_text(encoding="utf-8"), path.name
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputError(f"prompt '{name}': template file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"prompt '{name}' ({path.name}): not UTF-8 text (byte {exc.start})") from None
