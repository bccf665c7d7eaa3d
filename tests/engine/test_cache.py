"""The stage cache: keys, atomic entries, reuse, --no-cache, concurrent builders."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from compiler.engine.cache import Cache, stage_key


def _key(**config: object) -> str:
    return stage_key("s", inputs={"model": "0" * 64}, config=config, code="c", tools={"onnx": "1"})


def test_key_is_full_sha256_and_changes_with_every_part() -> None:
    base = _key(a=1)
    assert len(base) == 64
    assert base == _key(a=1)
    assert base != _key(a=2)
    assert base != stage_key("s", inputs={"model": "1" * 64}, config={"a": 1}, code="c", tools={"onnx": "1"})
    assert base != stage_key("s", inputs={"model": "0" * 64}, config={"a": 1}, code="d", tools={"onnx": "1"})
    assert base != stage_key("s", inputs={"model": "0" * 64}, config={"a": 1}, code="c", tools={"onnx": "2"})


def test_miss_builds_then_hit_reuses(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []

    def build(directory: Path) -> dict:
        calls.append(directory)
        (directory / "out.txt").write_text("x")
        return {"n": 1}

    first = cache.get_or_build("stage", _key(), build)
    second = cache.get_or_build("stage", _key(), build)
    assert not first.hit and second.hit and len(calls) == 1
    assert (second.path / "out.txt").read_text() == "x" and second.meta == {"n": 1}
    assert cache.info()["stage"]["entries"] == 1


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def build(directory: Path) -> dict:
        (directory / "half.bin").write_bytes(b"12")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        cache.get_or_build("stage", _key(), build)
    assert list((tmp_path / "stage").iterdir()) == []


def test_disabled_cache_never_reuses(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path, enabled=False), []
    for _ in range(2):
        cache.get_or_build("stage", _key(), lambda d: calls.append(d) or {})
    assert len(calls) == 2 and not (tmp_path / "stage").exists()
    cache.close()


def test_concurrent_builders_share_one_result(tmp_path: Path) -> None:
    calls, results = [], []

    def build(directory: Path) -> dict:
        calls.append(1)
        time.sleep(0.3)
        (directory / "out.txt").write_text("done")
        return {}

    def worker() -> None:
        results.append(Cache(tmp_path).get_or_build("stage", _key(), build))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(r.hit for r in results) == [False, True, True]
    assert all((r.path / "out.txt").read_text() == "done" for r in results)


def test_clear(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.get_or_build("stage", _key(), lambda d: (d / "f").write_bytes(b"x" * 100) and {})
    assert cache.clear() > 0
    assert cache.info() == {}
