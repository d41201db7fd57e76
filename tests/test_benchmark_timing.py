"""``benchmarks.timing``: alternating rounds and the JSON lines they append."""

from __future__ import annotations

import json

import jax.numpy as jnp

from benchmarks import timing


def test_alternating_ms_runs_every_implementation_in_turn(tmp_path):
    calls = []

    def make(name):
        def f(x):
            calls.append(name)
            return x + 1

        return f

    times = timing.alternating_ms({"a": make("a"), "b": make("b")}, (jnp.ones(3),), 3, 2)
    assert set(times) == {"a", "b"} and all(len(v) == 3 for v in times.values())
    assert all(t >= 0 for v in times.values() for t in v)
    # Round by round: a, a, b, b, then again.
    assert calls == ["a", "a", "b", "b"] * 3

    out = tmp_path / "new" / "r.jsonl"  # the folder is created
    timing.append_jsonl(str(out), {"x": 1})
    timing.append_jsonl(str(out), {"x": 2})
    timing.append_jsonl(None, {"x": 3})  # no file: nothing written
    assert [json.loads(line)["x"] for line in out.read_text().splitlines()] == [1, 2]


def test_append_jsonl_to_a_bare_file_name(tmp_path, monkeypatch):
    # A path without a folder (the working directory): nothing to create.
    monkeypatch.chdir(tmp_path)
    timing.append_jsonl("r.jsonl", {"x": 1})
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"x": 1}
