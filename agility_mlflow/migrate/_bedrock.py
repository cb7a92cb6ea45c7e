"""Prompt migration by Amazon Bedrock prompt optimization (``bedrock-agent-runtime`` ``optimize_prompt``).

Bedrock Prompt Management writes variables as ``{{variable}}``, as we do, so templates go in unchanged.
Credentials and region come from boto3's standard chain; ``AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME``
points the client elsewhere (a VPC endpoint, a test server).
"""

from __future__ import annotations

from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from agility_mlflow.backends.bedrock import aws_session, bedrock_errors
from agility_mlflow.errors import AgilityError, RetryableError


def bedrock_rewrite(text: str, target_model: str, region: str | None = None, attempts: int = 5) -> tuple[str, str]:
    """The optimized template and Bedrock's analysis, retrying throttling with backoff.

    Example:
        >>> bedrock_rewrite("Answer {{question}}", "us.anthropic.claude-3-5-haiku-20241022-v1:0")  # doctest: +SKIP
        ('<instructions>...</instructions> ... {{question}}', 'The prompt was restructured ...')
    """
    client = _client(region)
    retrying = Retrying(retry=retry_if_exception_type(RetryableError), stop=stop_after_attempt(attempts),
                        wait=wait_random_exponential(multiplier=0.5, max=20), reraise=True)
    try:
        return retrying(_optimize_once, client, text, target_model)
    except RetryableError as exc:
        raise AgilityError(f"Bedrock prompt optimization kept failing: {exc}") from None


def _client(region: str | None) -> Any:
    from botocore.config import Config

    session, region = aws_session(region)
    # One attempt per call: the retry loop above is the only one.
    return session.client("bedrock-agent-runtime", region_name=region, config=Config(retries={"total_max_attempts": 1}))


def _optimize_once(client: Any, text: str, target_model: str) -> tuple[str, str]:
    with bedrock_errors(f"Bedrock prompt optimization for {target_model}"):
        response = client.optimize_prompt(input={"textPrompt": {"text": text}}, targetModelId=target_model)
        analysis, optimized = [], None
        for event in response["optimizedPrompt"]:
            if "analyzePromptEvent" in event:
                analysis.append(event["analyzePromptEvent"].get("message", ""))
            elif "optimizedPromptEvent" in event:
                optimized = event["optimizedPromptEvent"]["optimizedPrompt"]["textPrompt"]["text"]
    if not optimized:
        raise AgilityError(f"Bedrock prompt optimization for {target_model} returned no optimized prompt")
    return optimized, "\n".join(a for a in analysis if a)
