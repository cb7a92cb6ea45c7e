"""Template formats (mustache, fstring, jinja2): rendering, the checks before any call, what the registry holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agility_mlflow.cli import main
from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.prompts import Template, load_template
from tests.helpers import write_project
from tests.openai_server import start_standin

COLUMNS = ("answer_ground_truth, answer_source_llm, context, input_token_source_llm, latency_source_llm, "
           "output_token_source_llm, question, sample_id, ttft_source_llm")
# The AWS reference's OpenAI answer prompt is written with Python str.format fields.
AWS_STYLE = "Use the context to answer.\nContext: {context}\nQuestion: {question}\nReply as JSON {{\"answer\": \"...\"}}."


def test_fstring_renders_fields_and_literal_braces_in_one_pass() -> None:
    t = Template.from_text("qa", AWS_STYLE, system="Expert on {sector}.", format="fstring")
    assert t.variables == {"context", "question", "sector"}
    messages = t.render({"context": "x={question}", "question": "Q?", "sector": "tax", "sample_id": "q1"})
    assert messages == [
        {"role": "system", "content": "Expert on tax."},
        {"role": "user", "content": 'Use the context to answer.\nContext: x={question}\nQuestion: Q?\nReply as JSON {"answer": "..."}.'},
    ]
    # The registry holds MLflow's own {{variable}} form, which MLflow renders to the same text.
    assert t.registry_template()[1]["content"] == 'Use the context to answer.\nContext: {{context}}\nQuestion: {{question}}\nReply as JSON {"answer": "..."}.'


def test_jinja2_renders_loops_and_filters_and_undefined_is_an_error() -> None:
    text = "{% for c in context %}- {{ c }}\n{% endfor %}Q: {{ question | trim }}"
    t = Template.from_text("qa", text, format="jinja2")
    assert t.variables == {"context", "question"}
    assert t.render({"context": ["a", "b"], "question": "  why? "})[0]["content"] == "- a\n- b\nQ: why?"
    with pytest.raises(InputError, match=r"^prompt 'qa' \(inline\): cannot render sample 'q9': UndefinedError: .*'question' is undefined"):
        t.render({"context": [], "sample_id": "q9"})


def test_jinja2_is_sandboxed() -> None:
    t = Template.from_text("qa", "{{ question.__class__.__mro__ }}", format="jinja2")
    with pytest.raises(InputError, match=r"SecurityError: access to attribute '__class__' of 'str' object is unsafe"):
        t.render({"question": "x"})


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ("Q: {question", "fstring", r"^prompt 'qa' \(inline\), line 1: not a Python format string \(expected '}' before end of string"),
    ("Q: {question:>10}", "fstring", r"^prompt 'qa' \(inline\), line 1: field '\{question:>10\}' is not a plain \{variable\}"),
    ("Q: {{ question }", "jinja2", r"^prompt 'qa' \(inline\), line 1: Jinja2 syntax error: unexpected '}'"),
])
def test_syntax_errors_name_the_line(text: str, fmt: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Template.from_text("qa", text, format=fmt)  # type: ignore[arg-type]


def test_a_path_is_read_as_a_file_whatever_its_extension(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "source.TXT").write_text(AWS_STYLE, encoding="utf-8")
    (tmp_path / "prompts" / "answer.jinja2").write_text("{{ question }}", encoding="utf-8")
    assert load_template("qa", "prompts/source.TXT", None, tmp_path, format="fstring").variables == {"context", "question"}
    assert load_template("qa", "prompts/answer.jinja2", None, tmp_path, format="jinja2").origin == "answer.jinja2"
    for missing in ("prompts/source.jinja2", "prompts/notes", "source.PROMPT"):
        with pytest.raises(InputError, match=rf"^prompt 'qa': template file not found: {tmp_path}/{missing}$"):
            load_template("qa", missing, None, tmp_path)


# Expected stderr of `agility run`; {dir} stands for the project folder.
CASES = {
    "fstring fields under the default format: the hint": (
        {"template": AWS_STYLE},
        "prompt 'qa' (inline), line 4: malformed placeholder near 'y as JSON {{\"answer\": \".' (use {{variable}} with a letter "
        "or _ first); it reads as a fstring template with {context}, {question}: set format: fstring"),
    "fstring fields without literal braces: the hint": (
        {"template": "Context: {context}\nQuestion: {question}"},
        "prompt 'qa' (inline): no {{variable}} placeholder (format: mustache), but {context}, {question} name columns of "
        "golden.csv in another format: set format: fstring"),
    "the AWS prompt's upper-case fields are hinted too": (
        {"template": "Context: {CONTEXT}\nQuery: {QUESTION}"},
        "prompt 'qa' (inline): no {{variable}} placeholder (format: mustache), but {CONTEXT}, {QUESTION} name columns of "
        "golden.csv in another format: set format: fstring"),
    "mustache text under format fstring": (
        {"template": "Q: {{question}}", "format": "fstring"},
        "prompt 'qa' (inline): no {variable} field (format: fstring), but {{question}} name columns of golden.csv in another "
        "format: set format: mustache"),
    "no placeholder at all": (
        {"template": "Answer the question."},
        "prompt 'qa' (inline): no {{variable}} placeholder (format: mustache): every sample would get the same prompt; "
        "use a column of golden.csv (e.g. {{question}})"),
    "fstring placeholder without a column": (
        {"template": "Q: {question} {ticker}", "format": "fstring"},
        "prompt 'qa' (inline): placeholder '{ticker}' has no column in golden.csv (columns: " + COLUMNS + ")"),
    "jinja2 placeholder without a column": (
        {"template": "{% if ticker %}{{ ticker }}{% endif %} {{ question }}", "format": "jinja2"},
        "prompt 'qa' (inline): placeholder '{{ ticker }}' has no column in golden.csv (columns: " + COLUMNS + ")"),
    "a path with an unexpected extension that does not exist": (
        {"template": "prompts/source.jinja2"}, "prompt 'qa': template file not found: {dir}/prompts/source.jinja2"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_templates_exit_2_before_any_call(name: str, tmp_path: Path) -> None:
    prompt, expected = CASES[name]
    with start_standin(latency_s=0.0) as server:
        candidate = {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url}
        config = write_project(tmp_path, prompts=[{"name": "qa", **prompt}], candidates=[candidate])
        result = CliRunner().invoke(main, ["run", str(config)])
        assert (result.exit_code, result.stderr) == (2, "error: " + expected.replace("{dir}", str(tmp_path)) + "\n")
        assert server.calls == 0


def test_run_sends_rendered_fstring_and_jinja2_prompts_and_registers_what_mlflow_renders(tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "source.TXT").write_text(AWS_STYLE, encoding="utf-8")
    (tmp_path / "prompts" / "answer.jinja2").write_text("{{ question | upper }}\n{{ context }}", encoding="utf-8")
    prompts = [{"name": "aws-qa", "template": "prompts/source.TXT", "format": "fstring"},
               {"name": "jinja-qa", "template": "prompts/answer.jinja2", "format": "jinja2"}]
    with start_standin(latency_s=0.0) as server:
        candidate = {"name": "gpt", "provider": "openai", "model_id": "gpt-4o-mini", "base_url": server.url, "stream": False}
        config = write_project(tmp_path, prompts=prompts, candidates=[candidate], source=None, run={"concurrency": 1, "traces": False})
        result = CliRunner().invoke(main, ["run", str(config), "--limit", "1"])
        assert result.exit_code == 0, result.stderr
        sent = [request["messages"][-1]["content"] for request in server.answered]
    assert sent == [
        'Use the context to answer.\nContext: Revenue FY2023: $1,577.0 million.\nQuestion: What was revenue in FY2023?\nReply as JSON {"answer": "..."}.',
        "WHAT WAS REVENUE IN FY2023?\nRevenue FY2023: $1,577.0 million.",
    ]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    row = {"question": "What was revenue in FY2023?", "context": "Revenue FY2023: $1,577.0 million."}
    for name, expected in zip(("aws-qa", "jinja-qa"), sent):
        (version,) = MlflowClient().search_prompt_versions(name)
        assert version.format(**row) == expected  # MLflow renders the registered form exactly as the model saw it
    runs = mlflow.search_runs(experiment_names=["test-migration"], filter_string="tags.`agility.role` = 'candidate'", output_format="list")
    assert sorted(r.data.tags["agility.prompt"] for r in runs) == ["prompts:/aws-qa/1", "prompts:/jinja-qa/1"]


def test_migrate_keeps_fstring_and_jinja2_placeholders(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from agility_mlflow.migrate import migrate_prompt
    from tests.migrate.test_migrate import TARGET, _rewriter

    jinja = "{% for c in context %}<doc>{{ c }}</doc>{% endfor %}\nQ: {{ question | trim }}"
    prompts = [{"name": "aws-fin", "template": "Context: {context}\nQuestion: {question}", "format": "fstring"},
               {"name": "jinja-fin", "template": jinja, "format": "jinja2"}]
    config = write_project(tmp_path, prompts=prompts)
    rewrite = "<rewritten_prompt><context>{$CONTEXT}</context>\n<question>{question}</question></rewritten_prompt>"
    result = migrate_prompt(config, "aws-fin", "metaprompt", TARGET, backend=_rewriter(rewrite))
    assert (result.source_uri, result.uri) == ("prompts:/aws-fin/1", "prompts:/aws-fin/2")
    assert result.template == "<context>{{context}}</context>\n<question>{{question}}</question>"
    assert MlflowClient().get_prompt_version("aws-fin", 1).template == "Context: {{context}}\nQuestion: {{question}}"

    rewrite = "<rewritten_prompt>Documents:\n{% for c in context %}- {{ c }}\n{% endfor %}Question: {{ question | trim }}</rewritten_prompt>"
    result = migrate_prompt(config, "jinja-fin", "metaprompt", TARGET, backend=_rewriter(rewrite))
    assert MlflowClient().get_prompt_version("jinja-fin", 2).format(context=["a", "b"], question=" Q? ") == "Documents:\n- a\n- b\nQuestion: Q?"
    lost = "<rewritten_prompt>{% if context %}ctx{% endif %}</rewritten_prompt>"
    with pytest.raises(AgilityError, match=r"lost \{\{question\}\}: not registered$"):
        migrate_prompt(config, "jinja-fin", "metaprompt", TARGET, backend=_rewriter(lost))
