"""Prompt migration by Amazon Bedrock prompt optimization (``bedrock-agent-runtime`` ``optimize_prompt``).

Bedrock Prompt Management writes variables as ``{{variable}}``, as we do, so templates go in unchanged.
Credentials and region come from boto3's standard chain; ``AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME``
points the client elsewhere (a VPC endpoint, a test server).
"""

from __future__ import annotations

import os
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from agility_mlflow.errors import AgilityError, RetryableError

_RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "InternalServerException"}


def optimize_prompt(text: str, target_model: str, region: str | None = None, attempts: int = 5) -> tuple[str, str]:
    """The optimized template and Bedrock's analysis, retrying throttling with backoff.

    Example:
        >>> optimize_prompt("Answer {{question}}", "us.anthropic.claude-3-5-haiku-20241022-v1:0")  # doctest: +SKIP
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
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    region = region or os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
    # One attempt per call: the retry loop above is the only one.
    return session.client("bedrock-agent-runtime", region_name=region, config=Config(retries={"total_max_attempts": 1}))


def _optimize_once(client: Any, text: str, target_model: str) -> tuple[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

    try:
        response = client.optimize_prompt(input={"textPrompt": {"text": text}}, targetModelId=target_model)
        analysis, optimized = [], None
        for event in response["optimizedPrompt"]:
            if "analyzePromptEvent" in event:
                analysis.append(event["analyzePromptEvent"].get("message", ""))
            elif "optimizedPromptEvent" in event:
                optimized = event["optimizedPromptEvent"]["optimizedPrompt"]["textPrompt"]["text"]
    except ClientError as exc:
        error = exc.response.get("Error") or {}
        code = error.get("Code", "UnknownError")
        code = code[:1].upper() + code[1:]  # exceptions inside event streams are camel-case
        message = f"{code}: {error.get('Message', '')}".rstrip(": ")
        if code in _RETRYABLE:
            raise RetryableError(message, throttled=code == "ThrottlingException") from None
        raise AgilityError(f"Bedrock prompt optimization for {target_model}: {message}") from None
    except (ConnectionError, HTTPClientError) as exc:  # timeouts, refused or dropped connections
        raise RetryableError(f"{type(exc).__name__}: {exc}") from None
    except BotoCoreError as exc:  # no credentials, bad parameters: retrying will not help
        raise AgilityError(f"Bedrock prompt optimization: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not optimized:
        raise AgilityError(f"Bedrock prompt optimization for {target_model} returned no optimized prompt")
    return optimized, "\n".join(a for a in analysis if a)
