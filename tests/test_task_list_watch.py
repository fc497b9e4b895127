"""The live tree's periodic task-list walk must not hold a slow guest still (unit)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from xenhpt.cli import trace as trace_cli


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_a_walk_that_takes_seconds_is_not_repeated_every_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    walks: list[float] = []

    def slow_walk(kernel: object) -> SimpleNamespace:  # as in the nested Xen lab: 2 s
        walks.append(clock.now)
        clock.now += 2.0
        return SimpleNamespace(problems=["skip reconcile"], tasks=[])

    monkeypatch.setattr(trace_cli, "time", clock)
    monkeypatch.setattr(trace_cli, "read_processes", slow_walk)
    watch = trace_cli.TaskListWatch(kernel=None, engine=None, interval=1.0)
    for _ in range(600):  # the capture loop asks every 0.1 s for 60 s
        watch.maybe_check()
        clock.now += 0.1
    walked = 2.0 * len(walks)
    assert walked <= 0.1 * (clock.now - 100.0), walks  # ~1/20 of the time, not 2/3
    assert len(walks) >= 1


def test_a_fast_walk_still_runs_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    walks: list[float] = []

    def fast_walk(kernel: object) -> SimpleNamespace:
        walks.append(clock.now)
        clock.now += 0.001
        return SimpleNamespace(problems=["skip reconcile"], tasks=[])

    monkeypatch.setattr(trace_cli, "time", clock)
    monkeypatch.setattr(trace_cli, "read_processes", fast_walk)
    watch = trace_cli.TaskListWatch(kernel=None, engine=None, interval=1.0)
    for _ in range(100):  # 10 s
        watch.maybe_check()
        clock.now += 0.1
    assert 8 <= len(walks) <= 10, walks
