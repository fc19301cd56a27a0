"""Layering: the core (everything but the run driver ``metaopt.train`` and the command line
``metaopt.cli``) never imports them, and the self / frozen outer optimizers belong to the core.

Before 0.2, ``metaopt/pretrained/__init__.py`` imported ``metaopt.train.artifacts`` (which
imported ``metaopt.train.config``, which imported ``metaopt.pretrained``): both checks below
failed on that code.
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DRIVER = ("metaopt.train", "metaopt.cli")


def _core_files():
    for folder in ("metaopt", "tasks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("metaopt/train/") or rel == "metaopt/cli.py":
                continue
            yield path


def _imports(path: pathlib.Path):
    """Every module name an ``import`` statement in ``path`` can load (function level too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = path.relative_to(ROOT).with_suffix("").parts[:-node.level]
                base = ".".join(("metaopt", "tasks", *parts[1:]) if parts[0] == "tasks"
                                else parts)
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            yield mod
            yield from (f"{mod}.{alias.name}" for alias in node.names)


def _is_driver(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DRIVER)


def test_core_source_never_imports_the_run_driver():
    files = list(_core_files())
    assert len(files) > 40  # the scan sees the whole core
    bad = [(p.relative_to(ROOT).as_posix(), name) for p in files for name in _imports(p)
           if _is_driver(name)]
    assert bad == []


def test_core_imports_and_loading_a_pretrained_optimizer_leave_the_driver_unloaded():
    code = (
        "import sys, jax, optax\n"
        "import metaopt.pretrained\n"  # first, alone: the old import cycle started here
        "import metaopt\n"
        "from metaopt import outer_optimizers\n"
        "lopt, theta = metaopt.load_optimizer('mlp_small_digits')\n"
        "tx = outer_optimizers.make('frozen', None, source='mlp_small_digits')\n"
        "tx = outer_optimizers.make('self', lopt, warmup_steps=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('metaopt.train', 'metaopt.cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_self_and_frozen_are_core_outer_optimizers():
    from metaopt import outer_optimizers

    assert set(outer_optimizers.names()) == {"adam", "sgd", "adamw", "rmsprop", "self", "frozen"}
    assert outer_optimizers.REGISTRY.options("frozen")["source"].default is \
        outer_optimizers.REGISTRY.options("frozen")["source"].empty
    assert not (ROOT / "metaopt" / "train" / "outer_opt.py").exists()
