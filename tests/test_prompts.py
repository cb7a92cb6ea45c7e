"""Templates: placeholders, checks against the dataset, single-pass rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from agility_mlflow.errors import InputError
from agility_mlflow.prompts import Template, load_template


def test_variables_and_render_with_system() -> None:
    t = Template.from_text("qa", "Q: {{question}} C: {{ context }}", system="Expert in {{domain}}.")
    assert t.variables == {"question", "context", "domain"}
    messages = t.render({"question": "why?", "context": "c", "domain": "tax"})
    assert messages == [{"role": "system", "content": "Expert in tax."}, {"role": "user", "content": "Q: why? C: c"}]
    assert t.registry_template() == [
        {"role": "system", "content": "Expert in {{domain}}."},
        {"role": "user", "content": "Q: {{question}} C: {{ context }}"},
    ]


def test_braces_inside_values_are_not_expanded() -> None:
    t = Template.from_text("qa", "{{a}}|{{b}}")
    assert t.render({"a": "{{b}}", "b": "{x}"})[0]["content"] == "{{b}}|{x}"


def test_single_braces_are_text() -> None:
    t = Template.from_text("qa", 'Reply as JSON {"score": 1}. {{question}}')
    assert t.variables == {"question"}


@pytest.mark.parametrize("text", ["Q: {{question}", "Q: {{ 1abc }}", "Q: {{question}}}}", "Q: {{ a b }}"])
def test_malformed_placeholders(text: str) -> None:
    with pytest.raises(InputError, match=r"^prompt 'qa' \(inline\), line 1: malformed placeholder near"):
        Template.from_text("qa", text)


def test_missing_variable_fails_before_any_call() -> None:
    t = Template.from_text("qa", "{{question}} {{ticker}}")
    with pytest.raises(InputError) as info:
        t.check_columns({"sample_id", "question"}, "golden.csv")
    assert str(info.value) == (
        "prompt 'qa' (inline): placeholder '{{ticker}}' has no column in golden.csv (columns: question, sample_id)"
    )


def test_template_from_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("Line one\nQ: {{question}}\n", encoding="utf-8")
    t = load_template("qa", "p.txt", None, tmp_path)
    assert t.origin == "p.txt" and t.variables == {"question"}
    with pytest.raises(InputError, match=r"^prompt 'qa': template file not found: .*nope\.txt$"):
        load_template("qa", "nope.txt", None, tmp_path)


def test_error_names_the_line_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("ok\nok {{question}}\nbad {{context}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"^prompt 'qa' \(p\.txt\), line 3: malformed placeholder"):
        load_template("qa", "p.txt", None, tmp_path)


def test_a_registry_chat_prompt_brings_its_system_message(tmp_path: Path) -> None:
    import mlflow

    chat = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Q: {{question}}"}]
    uri = mlflow.genai.register_prompt(name="chat-qa", template=chat).uri
    template = load_template("qa", uri, None, tmp_path)
    assert (template.system, template.user, template.registry_uri) == ("Be exact.", "Q: {{question}}", "prompts:/chat-qa/1")
    with pytest.raises(InputError, match=r"^prompt 'qa': prompts:/chat-qa/1 is a chat prompt with its own system message; drop 'system'$"):
        load_template("qa", uri, "Other system.", tmp_path)
