"""When work may go to forked worker processes (the sweep's fits, the report's t-SNE map).

Forking copies this process as it is, so it is done only where that is safe and cheap: on
Linux (elsewhere fork is unsafe or unavailable, and spawning a fresh interpreter would import
everything again), not from a daemonic process (which may have no children), and only while
this process runs one thread — a fork taken while another thread holds a lock (logging, a
database pool, an OpenMP pool) can leave the child waiting on it for ever.  So the web app's
job worker, with its heartbeat thread, runs the same work in its own process.
"""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["cores", "can_fork"]


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def can_fork(min_cores: int = 1) -> bool:
    """Whether worker processes may be forked from here now (the module docstring)."""
    import multiprocessing

    return (cores() >= min_cores and sys.platform.startswith("linux")
            and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon and threading.active_count() == 1)
