"""Every process a stack starts can be stopped by a signal.

The stack blocks SIGINT/SIGTERM around each ``Popen`` (so a Ctrl-C cannot orphan a child); a
child must not inherit that mask, or SIGTERM would never reach it and every stop would end in
SIGKILL after a timeout, with no clean leave from its consumer group.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STOPPING = {signal.SIGINT, signal.SIGTERM}


def _blocked(pid: int) -> set[signal.Signals]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            mask = int(line.split()[1], 16)
            return {s for s in STOPPING if mask & (1 << (s - 1))}
    raise AssertionError(f"no SigBlk line for {pid}")


def test_no_process_of_the_stack_blocks_the_stopping_signals(stack) -> None:
    blocked = {name: _blocked(proc.pid) for name, proc in stack.processes.items()}
    assert blocked, "the stack started no process"
    assert {name: s for name, s in blocked.items() if s} == {}
    broker = getattr(stack, "_broker", None)
    proc = getattr(broker, "_proc", None)
    if proc is not None:
        assert _blocked(proc.pid) == set()
