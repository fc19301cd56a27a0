"""Turn SIGINT / SIGTERM into a "stop requested" flag so the driver can checkpoint and exit."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class StopFlag:
    """Set by a handled signal; ``signum`` records which."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def graceful_stop(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[StopFlag]:
    """Within the block, the listed signals set the yielded flag instead of killing the process.

    A second SIGINT while the flag is already set raises KeyboardInterrupt as usual.
    """
    flag = StopFlag()
    previous = {}

    def handler(signum, frame):
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signum = signum

    for s in signals:
        previous[s] = signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
