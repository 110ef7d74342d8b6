"""This process's id, read without a system call on every request.

Transports rebuild their clients in a forked child (connections and obstore's runtime must not
be shared across a fork). Comparing against :func:`current` instead of ``os.getpid()`` keeps a
system call off the hot path; the value is refreshed in the child by ``os.register_at_fork``.
"""

from __future__ import annotations

import os

__all__ = ["current"]

_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current() -> int:
    """The id of the running process (as ``os.getpid()``)."""
    return _pid
