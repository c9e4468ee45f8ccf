"""Ctrl-C and SIGTERM that cannot be lost before outputs are moved into place.

Python turns SIGINT into ``KeyboardInterrupt`` at the next bytecode, and the CLI turns SIGTERM
into ``SystemExit`` the same way. When that bytecode belongs to a finalizer or a weakref callback
(garbage collection in the middle of training), Python prints "Exception ignored" and the run
goes on: it would then write its outputs as if it had never been interrupted (seen once in CI).
The handlers installed here also record the signal, and the atomic writers of
:mod:`cellsmith.report.io` and :mod:`cellsmith.nn.saving` call :func:`raise_if_interrupted`
before moving anything into place. No library offers this: signal handling is per program.
"""

from __future__ import annotations

import signal
from types import FrameType

#: The signal received since :func:`install`, or None.
_received: int | None = None


def _interruption(signum: int) -> BaseException:
    """What the signal raises: KeyboardInterrupt for Ctrl-C, an exit with ``128 + signum`` else."""
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    raise _interruption(signum)


def install() -> None:
    """Record and raise on SIGTERM, and on SIGINT unless the process ignores it (a shell's
    background job). By default SIGTERM (kill, a scheduler's time limit) ends Python without
    running ``finally`` blocks, which would leave the atomic writers' temporary folders behind;
    as ``SystemExit`` it unwinds like Ctrl-C does and they are removed."""
    signal.signal(signal.SIGTERM, _handle)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handle)


def raise_if_interrupted() -> None:
    """Raise what the recorded signal raised, if one arrived (it may have been swallowed)."""
    if _received is not None:
        raise _interruption(_received)
