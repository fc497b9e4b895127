"""Which capture source a trace uses, decided in one place (no VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenhpt.errors import BadUsage
from xenhpt.tracer.choose_source import plugin_file_for


class Guest:
    def __init__(self, capture_file: Path | None) -> None:
        self.capture_file = capture_file


def test_auto_takes_the_plugin_the_target_has() -> None:
    assert plugin_file_for("auto", "lab", Guest(Path("/dev/shm/x")), None) == Path("/dev/shm/x")


def test_auto_without_a_plugin_means_breakpoints() -> None:
    assert plugin_file_for("auto", "qemu:localhost:1234", Guest(None), None) is None


def test_a_capture_file_given_by_hand_wins() -> None:
    given = Path("/dev/shm/by-hand")
    assert plugin_file_for("auto", "lab", Guest(Path("/dev/shm/x")), given) == given


def test_breakpoints_never_use_the_plugin() -> None:
    assert plugin_file_for("breakpoints", "lab", Guest(Path("/dev/shm/x")), None) is None


def test_asking_for_a_plugin_the_target_lacks_is_one_clear_error() -> None:
    with pytest.raises(BadUsage, match="has no capture plugin.*--capture plugin"):
        plugin_file_for("plugin", "qemu:localhost:1234", Guest(None), None)
