"""The benchmarks' peak-memory reading (``scripts/benchutil.py``).

Linux keeps ``ru_maxrss`` across ``exec``: a benchmark's fresh child process reported at least
its parent's resident memory at the fork. ``peak_rss_mb`` must measure the child alone.
"""

import pathlib
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
CHILD = (f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import numpy as np; "
         "from benchutil import peak_rss_mb; before = peak_rss_mb(); "
         "a = np.ones(2**25); a += 1; print(before, peak_rss_mb())")  # 256 MiB touched


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="Linux /proc")
def test_a_child_does_not_report_its_parents_memory():
    import numpy as np

    held = np.ones(2**27)  # 1 GiB resident in this process while the child starts
    held += 1
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True).stdout.split()
    before, after = float(out[0]), float(out[1])
    # the child has imported numpy and jax (~200 MB), not the parent's 1,024 MiB
    assert before < 600, f"the child started at {before} MB: the parent's 1 GiB leaked in"
    assert after - before > 200  # its own 256 MiB array is seen
    del held
