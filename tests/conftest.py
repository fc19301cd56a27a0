"""Shared test settings: strict rank promotion so broadcasting bugs fail loudly, and a
persistent XLA compilation cache for the subprocesses this session starts, and LLVM -O0.

The resume and device tests start several Python processes that compile the same programs;
JAX's persistent cache (keyed by the compiled program) turns all but the first compilation
into a lookup. The cache lives in a fresh temporary folder, passed to subprocesses through
``JAX_COMPILATION_CACHE_DIR`` and removed at the end, so no state leaks between sessions.
The test process itself does not use it (writing every executable costs more than the rare
hits save). Results are unaffected: a cached executable is the same executable.
"""

import os
import shutil
import tempfile

# LLVM -O0 for the tests (and the processes they start): compiling dominates the suite, and -O0
# compiles about 30% faster end to end on 2 cores. A user's own XLA_FLAGS take precedence.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
import pytest

_CACHE = tempfile.mkdtemp(prefix="metaopt-test-xla-cache-")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


class CompileCounter:
    """``with CompileCounter() as c: ...`` counts XLA compilations in the block (``c.count``),
    through JAX's public monitoring events (no private API)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __enter__(self):
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)
        return self

    def _on(self, event, duration, **kwargs):
        if event == self.EVENT:
            self.count += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._on)


@pytest.fixture
def count_compiles():
    """The :class:`CompileCounter` class, to count compilations in a ``with`` block."""
    return CompileCounter


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield
