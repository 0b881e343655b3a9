"""SIGTERM and SIGINT during training (RELIABILITY.md R16): the first asks for a clean stop (finish
the update, save, exit 75), a second exits at once."""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Optional

log = logging.getLogger("nmt.train")


def raw_stderr(text: str) -> None:
    """Write ``text`` to file descriptor 2 with one system call, bypassing Python's buffered
    streams and their locks (safe inside a signal handler); errors are ignored."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class StopRequests:
    """Whether training was asked to stop, by a signal or by :meth:`request`.

    :meth:`install` puts handlers in place for the main thread (none elsewhere) and returns the
    previous ones for :meth:`restore`. The handler does no logging: it runs between two bytecodes
    of the main thread, which may be inside a log handler's buffered write, where a nested write
    fails ("reentrant call") and logging drops the line; :meth:`announce` logs it from the loop.
    """

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self._unannounced: Optional[str] = None

    def request(self, reason: str = "stop requested") -> None:
        """Ask for a clean stop after the current update."""
        self.reason = reason

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def install(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            # The stop is recorded before the notice is written: a second signal may run its handler
            # inside this one (CPython checks for signals between any two bytecodes) and must find
            # the first one's mark.
            name = signal.Signals(signum).name
            if self.reason is not None:
                raw_stderr(f"second signal ({name}): exiting now without saving\n")
                os._exit(128 + signum)
            self.request(name)
            self._unannounced = name
            raw_stderr(f"{name} received: finishing the current update, then saving and exiting "
                       "(send it again to exit at once)\n")

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def restore(previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def announce(self, step: int) -> None:
        """Log a signal the handler received (once)."""
        if self._unannounced is not None:
            log.warning("%s received: saving a checkpoint at step %d and exiting", self._unannounced, step)
            self._unannounced = None


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT (or :meth:`Trainer.request_stop`) after saving
    ``checkpoint``; running the same command again resumes from it (R16, R17)."""

    def __init__(self, checkpoint: Path, step: int, reason: str) -> None:
        super().__init__(f"{reason}: saved {checkpoint} at step {step}; run the same command again to resume")
        self.checkpoint, self.step = checkpoint, step
