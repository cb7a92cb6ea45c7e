"""An on-disk, content-addressed cache of model answers.

The key is a SHA-256 over everything that can change an answer: provider, model id, the
backend's identity (endpoint, model file), every inference parameter and the rendered messages.
Each entry is one JSON file written atomically (temp file + rename), so a crash never leaves a
half-written entry, and each carries a checksum of its payload: a damaged entry is detected,
removed and recomputed, never served.

Example:
    >>> import tempfile
    >>> from agility_mlflow.backends import Generation
    >>> cache = ResponseCache(tempfile.mkdtemp())
    >>> key = cache_key("local", "m", {}, {"temperature": 0}, [{"role": "user", "content": "hi"}])
    >>> cache.put(key, Generation("hello", 0.1))
    >>> cache.get(key).text
    'hello'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agility_mlflow.backends import Generation

logger = logging.getLogger(__name__)
_FORMAT = 1


def default_cache_dir() -> Path:
    """``AGILITY_CACHE_DIR``, else ``$XDG_CACHE_HOME/agility-mlflow``, else ``~/.cache/agility-mlflow``."""
    if os.environ.get("AGILITY_CACHE_DIR"):
        return Path(os.environ["AGILITY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agility-mlflow"


def cache_key(
    provider: str,
    model_id: str,
    identity: Mapping[str, Any],
    params: Mapping[str, Any],
    messages: Sequence[Mapping[str, str]],
) -> str:
    """The content address of one model call."""
    material = json.dumps(
        {"v": _FORMAT, "provider": provider, "model": model_id, "identity": identity, "params": params, "messages": messages},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """Answers stored as ``<dir>/<key[:2]>/<key>.json``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Generation | None:
        """The stored answer, or None when absent or damaged (a damaged entry is deleted)."""
        path = self._path(key)
        try:
            entry = json.loads(path.read_bytes())
            payload = entry["payload"]
            if entry["sha256"] != _checksum(payload) or entry["key"] != key:
                raise ValueError("checksum mismatch")
            return Generation.from_dict(payload)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            logger.warning("cache entry %s is damaged (%s): recomputing", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, generation: Generation) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = generation.to_dict()
        data = json.dumps({"key": key, "sha256": _checksum(payload), "payload": payload}, ensure_ascii=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _checksum(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()
