"""Start a child process without a signal in between the fork and noting its id.

A Ctrl-C handled as ``KeyboardInterrupt`` just after ``Popen`` forked, but before the caller kept
the ``Popen``, would leave a process nobody stops. Blocking SIGINT/SIGTERM for those few lines
delivers them right after, once the process is accounted for. A child inherits the blocked
mask across fork and exec, so every ``Popen`` in such a block passes :func:`unmask_in_child`:
otherwise the service, broker or upstream it starts would never see a SIGTERM (a stop would
always end in SIGKILL, with no clean leave from its consumer group).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

_STOPPING = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (main thread only: handlers run there) until the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unmask_in_child() -> None:
    """``preexec_fn`` of a ``Popen`` inside :func:`signals_deferred`: the child may be stopped."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
