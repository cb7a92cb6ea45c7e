"""The response cache: what makes a key, what is stored, and that a damaged entry is never served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agility_mlflow.backends import Generation
from agility_mlflow.cache import ResponseCache, cache_key, default_cache_dir

MESSAGES = [{"role": "user", "content": "What was revenue?"}]
ANSWER = Generation("$1,577 million", 0.42, 0.1, 12, 4, "stop", 0.3)


def _key(**changes: object) -> str:
    parts: dict = {"provider": "openai", "model_id": "gpt-4o-mini", "identity": {"base_url": "http://x/v1"},
                   "params": {"temperature": 0.0, "max_tokens": 64}, "messages": MESSAGES}
    parts.update(changes)
    return cache_key(parts["provider"], parts["model_id"], parts["identity"], parts["params"], parts["messages"])


def test_every_part_of_a_call_changes_the_key_and_nothing_else_does() -> None:
    key = _key()
    assert len(key) == 64 and key == _key()
    assert _key(params={"max_tokens": 64, "temperature": 0.0}) == key  # parameter order is not content
    for changed in (_key(provider="bedrock"), _key(model_id="gpt-4o"), _key(identity={"base_url": "http://y/v1"}),
                    _key(params={"temperature": 0.5, "max_tokens": 64}), _key(messages=[{"role": "user", "content": "What was profit?"}])):
        assert changed != key


def test_an_answer_comes_back_whole(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    assert cache.get(_key()) is None
    cache.put(_key(), ANSWER)
    assert cache.get(_key()) == ANSWER
    (entry,) = tmp_path.glob("*/*.json")
    assert entry.name == f"{_key()}.json" and entry.parent.name == _key()[:2]
    assert not list(tmp_path.glob("*/.tmp-*"))  # written through a temporary file, renamed into place


@pytest.mark.parametrize("damage", ["stale checksum", "torn write", "another key's entry", "not UTF-8"])
def test_a_damaged_entry_is_deleted_and_never_served(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    cache = ResponseCache(tmp_path)
    cache.put(_key(), ANSWER)
    (entry,) = tmp_path.glob("*/*.json")
    stored = json.loads(entry.read_text(encoding="utf-8"))
    if damage == "stale checksum":
        stored["payload"]["text"] = "POISONED"
        entry.write_text(json.dumps(stored), encoding="utf-8")
    elif damage == "torn write":
        entry.write_bytes(entry.read_bytes()[:40])
    elif damage == "another key's entry":
        stored["key"] = _key(model_id="other")
        entry.write_text(json.dumps(stored), encoding="utf-8")
    else:
        entry.write_bytes(b"\xff\xfe" + entry.read_bytes())
    assert cache.get(_key()) is None
    assert not entry.exists()
    assert f"cache entry {entry.name} is damaged" in caplog.text and "recomputing" in caplog.text


def test_the_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGILITY_CACHE_DIR", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("AGILITY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "agility-mlflow"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "agility-mlflow"
