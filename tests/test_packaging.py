"""Packaging: the library imports beside a user's own ``tasks.py``, and the wheel installs into
a clean virtual environment with no generic top-level package (``tasks``, ``experiments``)."""

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_import_beside_a_user_tasks_module(tmp_path):
    (tmp_path / "tasks.py").write_text("RAISED = True\nraise RuntimeError('user tasks.py')\n")
    code = ("import metaopt; from metaopt import tasks; "
            "assert 'digits_mlp' in tasks.names(); print(metaopt.Task.__module__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "metaopt.tasks.base"


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, timeout=1800)
    (wheel,) = dist.glob("metaopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"metaopt", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "metaopt/tasks/base.py" in names
    assert any(n.startswith("metaopt/pretrained/mlp_small_digits/") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=3600)
    code = ("import metaopt, jax, optax; from metaopt import tasks; "
            "t = tasks.make('digits_mlp'); p = t.init(jax.random.key(0)); "
            "print(metaopt.__file__)")
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([str(py), "-c", code], cwd=work, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(venv) in proc.stdout
