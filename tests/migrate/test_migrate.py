"""Prompt migration: placeholders kept or the result rejected; versions, tags and diff read back from MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from agility_mlflow.errors import AgilityError, InputError
from agility_mlflow.evaluation import prepare, run_project
from agility_mlflow.migrate import check_placeholders, migrate_prompt, restore_placeholders
from tests.bedrock_server import start_bedrock_server
from tests.fake_backend import FakeBackend
from tests.helpers import run_cli, write_project

TARGET = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
SOURCE = "Context: {{context}}\nQuestion: {{question}}\nAnswer briefly."


def _rewriter(reply: str) -> FakeBackend:
    """A stand-in rewriting model with a fixed reply."""
    return FakeBackend(reply, model_id="fixed-rewriter", cacheable=False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTINGONLY0000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _versions(name: str) -> list[str]:
    return [v.template for v in MlflowClient().search_prompt_versions(name)]


def test_renamed_placeholders_are_put_back() -> None:
    text, repairs = restore_placeholders("<q>{$QUESTION}</q> <c>{context}</c> ${Question}", ["question", "context"])
    assert text == "<q>{{question}}</q> <c>{{context}}</c> {{question}}"
    assert repairs == ["{$QUESTION} -> {{question}}", "${Question} -> {{question}}", "{context} -> {{context}}"]


def test_lost_or_invented_placeholders_are_rejected() -> None:
    with pytest.raises(AgilityError) as info:
        check_placeholders("Q: {{question}} {{ticker}}", ["question", "context"], "the rewrite")
    assert str(info.value) == "the rewrite lost {{context}} and invented {{ticker}}: not registered"


def test_metaprompt_registers_a_repaired_version_with_tags_and_diff(tmp_path: Path) -> None:
    config = write_project(tmp_path, prompts=[{"name": "fin", "template": SOURCE}])
    reply = ("<analysis>Wrapped inputs in XML tags.</analysis><rewritten_prompt>Answer briefly from the context.\n"
             "<context>{$CONTEXT}</context>\n<question>{{question}}</question></rewritten_prompt>")
    result = migrate_prompt(config, "fin", "metaprompt", TARGET, backend=_rewriter(reply))
    assert result.template == "Answer briefly from the context.\n<context>{{context}}</context>\n<question>{{question}}</question>"
    assert result.repairs == ["{$CONTEXT} -> {{context}}"]
    client = MlflowClient()
    version = client.get_prompt_version("fin", result.uri.rsplit("/", 1)[1])
    assert version.template == result.template
    assert version.tags["agility.migrated_from"] == result.source_uri == "prompts:/fin/1"
    assert version.tags["agility.migration_method"] == "metaprompt" and version.tags["agility.target_model"] == TARGET
    assert version.tags["agility.analysis"] == "Wrapped inputs in XML tags."
    run = client.get_run(result.run_id)
    assert run.data.tags["agility.role"] == "migration" and run.data.metrics["placeholders_repaired"] == 1
    diff = Path(client.download_artifacts(result.run_id, "prompt.diff", str(tmp_path))).read_text()
    assert "-Context: {{context}}" in diff and "+<context>{{context}}</context>" in diff


def test_a_rewrite_that_drops_a_variable_is_never_registered(tmp_path: Path) -> None:
    config = write_project(tmp_path, prompts=[{"name": "fin2", "template": SOURCE}])
    reply = "<rewritten_prompt>Answer the question: {{question}}</rewritten_prompt>"
    with pytest.raises(AgilityError, match=r"lost \{\{context\}\}: not registered$"):
        migrate_prompt(config, "fin2", "metaprompt", TARGET, backend=_rewriter(reply))
    assert MlflowClient().search_prompts(filter_string="name = 'fin2'") == []


def test_metaprompt_through_the_real_local_model_is_refused_when_it_cannot_follow(tmp_path: Path) -> None:
    # The default rewriter is the local SmolLM2, called greedily: a 135M model does not produce the
    # <rewritten_prompt> block, and migrate must say so and register nothing (the registered path is
    # proven above on a scripted reply, and on Bedrock's optimizer below).
    config = write_project(tmp_path, prompts=[{"name": "fin3", "template": SOURCE}])
    with pytest.raises(AgilityError) as caught:
        migrate_prompt(config, "fin3", "metaprompt", TARGET)
    assert str(caught.value) == "the metaprompt model returned no <rewritten_prompt>: not registered"
    assert MlflowClient().search_prompts(filter_string="name = 'fin3'") == []


def test_bedrock_optimizer_renames_are_repaired_and_the_cli_prints_the_uri(aws_env: None, tmp_path: Path) -> None:
    optimizer = lambda model_id, text: text.replace("{{question}}", "{$QUESTION}").replace("Answer briefly.", "<rules>Answer briefly.</rules>")  # noqa: E731
    with start_bedrock_server(optimizer=optimizer) as server:
        config = write_project(tmp_path, prompts=[{"name": "fin4", "template": SOURCE}])
        result = run_cli("migrate", str(config), "--prompt", "fin4", "--method", "bedrock", "--target-model", TARGET,
                         env={"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": server.url})
        assert [r.operation for r in server.requests] == ["optimize-prompt"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "prompts:/fin4/2"
    assert "repaired placeholder {$QUESTION} -> {{question}}" in result.stderr
    version = MlflowClient().get_prompt_version("fin4", 2)
    assert version.template == "Context: {{context}}\nQuestion: {{question}}\n<rules>Answer briefly.</rules>"
    assert version.tags["agility.analysis"].startswith("Analyzing the prompt for")


def test_bedrock_optimizer_dropping_a_variable_fails_with_one_line(aws_env: None, tmp_path: Path) -> None:
    with start_bedrock_server(optimizer=lambda model_id, text: "Answer the question: {{question}}") as server:
        config = write_project(tmp_path, prompts=[{"name": "fin5", "template": SOURCE}])
        result = run_cli("migrate", str(config), "--prompt", "fin5", "--method", "bedrock", "--target-model", TARGET,
                         env={"AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": server.url})
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: the bedrock rewrite of 'fin5' for {TARGET} lost {{{{context}}}}: not registered"
    assert MlflowClient().search_prompts(filter_string="name = 'fin5'") == []


def test_unknown_prompt_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("migrate", str(write_project(tmp_path)), "--prompt", "nope", "--method", "metaprompt", "--target-model", TARGET)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: agility.yaml: --prompt 'nope' is not a prompt (known: qa)"


def test_a_migrated_version_runs_on_bedrock_and_links_to_the_run(aws_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    optimizer = lambda model_id, text: "<instructions>Answer briefly.</instructions>\n<context>{{context}}</context>\n{{question}}"  # noqa: E731
    with start_bedrock_server(optimizer=optimizer) as server:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME", server.url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", server.url)
        config = write_project(tmp_path, prompts=[{"name": "fin6", "template": SOURCE}])
        migrated = migrate_prompt(config, "fin6", "bedrock", TARGET)
        assert migrated.uri == "prompts:/fin6/2"
        candidate = {"name": "haiku", "provider": "bedrock", "model_id": TARGET, "prompts": ["fin6-claude"]}
        config = write_project(tmp_path, candidates=[candidate], metrics=["token_f1"], prompts=[
            {"name": "fin6", "template": SOURCE}, {"name": "fin6-claude", "template": migrated.uri}])
        summaries = {s.name: s for s in run_project(config, progress=False)}
        sent = [r.body["messages"][0]["content"][0]["text"] for r in server.requests if r.operation.startswith("converse")]
    assert summaries["haiku"].prompt_uri == "prompts:/fin6/2"  # the migrated version itself, not a copy
    assert len(sent) == 3 and all(text.startswith("<instructions>Answer briefly.</instructions>\n<context>") for text in sent)
    assert sorted(int(v.version) for v in MlflowClient().search_prompt_versions("fin6")) == [1, 2]  # nothing re-registered


def test_an_unknown_registry_prompt_is_bad_input(tmp_path: Path) -> None:
    config = write_project(tmp_path, prompts=[{"name": "qa", "template": "prompts:/never-registered/3"}])
    with pytest.raises(InputError, match=r"^prompt 'qa': cannot load prompts:/never-registered/3 from the Prompt Registry"):
        prepare(config)


def test_a_system_message_with_a_variable_migrates_and_keeps_it(tracking: str, tmp_path: Path) -> None:
    from tests.helpers import GOLDEN_ROWS

    rows = [{**row, "company": "Acme"} for row in GOLDEN_ROWS]
    prompt = {"name": "fin7", "template": SOURCE, "system": "You are a financial analyst at {{company}}."}
    config = write_project(tmp_path, rows=rows, prompts=[prompt])
    reply = "<analysis>Tagged.</analysis><rewritten_prompt><context>{{context}}</context>\n<question>{{question}}</question></rewritten_prompt>"
    result = migrate_prompt(config, "fin7", "metaprompt", TARGET, backend=_rewriter(reply))
    version = MlflowClient(tracking).get_prompt_version("fin7", result.uri.rsplit("/", 1)[1])
    assert version.template == [
        {"role": "system", "content": "You are a financial analyst at {{company}}."},  # kept as it is, placeholder included
        {"role": "user", "content": "<context>{{context}}</context>\n<question>{{question}}</question>"},
    ]
    # The user text is still held to its own placeholders: one it did not have is invented.
    invented = "<rewritten_prompt>{{company}}: {{context}} {{question}}</rewritten_prompt>"
    with pytest.raises(AgilityError, match=r"invented \{\{company\}\}: not registered$"):
        migrate_prompt(config, "fin7", "metaprompt", TARGET, backend=_rewriter(invented))
