"""tfds image sets (mnist, fashion_mnist, cifar10, omniglot) read from a local ``data_dir``.

Data are read with ``tfds.data_source(..., download=False)`` (array_record files, random
access, no tensorflow needed) from a directory prepared beforehand on a machine with network
access. Nothing here reaches the network: the prepared directory
``<data_dir>/<name>/<version>`` is checked on the local file system first, and a missing one
fails at once with a FileNotFoundError naming ``data_dir`` and saying how to prepare it.

Splits. tfds gives ``train`` and ``test`` (omniglot also ``small1`` / ``small2``, unused).
``test`` is kept as is; ``valid`` is a fixed, seeded random ``valid_fraction`` (default 10%)
of the tfds ``train`` split and ``train`` is the rest, both kept in their tfds order.

=============  =====================  ===========================  =======
name           example shape          train / valid / test          classes
=============  =====================  ===========================  =======
mnist          ``[28, 28, 1]``        54,000 / 6,000 / 10,000       10
fashion_mnist  ``[28, 28, 1]``        54,000 / 6,000 / 10,000       10
cifar10        ``[32, 32, 3]``        45,000 / 5,000 / 10,000       10
omniglot       ``[28, 28, 1]`` (*)    17,352 / 1,928 / 13,180       1,623
=============  =====================  ===========================  =======

Images stay uint8 (0..255); :func:`~tasks.data.arrays.take_batch` scales them to [0, 1] at
batch time. Labels are int32.

(*) Omniglot: tfds stores 105x105 RGB images with R = G = B (dark strokes on a white
background). They are turned into one grey channel (the channel mean) and, with
``omniglot_size`` (default 28, the usual few-shot size), area-averaged down to
``[omniglot_size, omniglot_size, 1]``; ``omniglot_size=None`` keeps ``[105, 105, 1]``. Labels
are tfds's global character ids in ``0..1622``: the tfds ``train`` split ("background", 964
characters) and ``test`` split ("evaluation", 659 characters) have disjoint classes, which is
the few-shot protocol (meta-train on train, meta-test on test); ``valid`` shares train's classes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metaopt.tasks.data.arrays import ArrayDataset

TFDS_DATASETS = ("mnist", "fashion_mnist", "cifar10", "omniglot")
DEFAULT_VALID_FRACTION = 0.1
TFDS_SPLIT_SEED = 0
OMNIGLOT_SIZE = 28
OMNIGLOT_NATIVE_SIZE = 105
READ_CHUNK = 1024  # records per batched ``__getitems__`` read


def preparation_hint(name: str, data_dir: object) -> str:
    """How to prepare data set ``name`` into ``data_dir`` (text for error messages)."""
    d = "DIR" if data_dir is None else str(data_dir)
    return (
        f"Prepare it on a machine with network access (generation needs tensorflow there; "
        f"loading here does not), in the array_record format, with\n"
        f"  tfds build {name} --data_dir {d} --file_format array_record\n"
        f"or\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.data_source('{name}', "
        f"data_dir='{d}', download=True, builder_kwargs={{'file_format': 'array_record'}})\"\n"
        f"(if prepared on another machine, copy {d}/{name}/ here) and pass data_dir={d!r}. "
        f"tfds itself is the optional extra: pip install -e '.[tfds]'."
    )


def _import_tfds():
    try:
        import tensorflow_datasets
    except ImportError as e:
        raise ImportError(
            "tensorflow_datasets is not installed; it is needed to read tfds data sets. "
            "Install the optional extra: pip install -e '.[tfds]'"
        ) from e
    return tensorflow_datasets


def check_name(name: object) -> str:
    """``name`` if it is one of TFDS_DATASETS, else ValueError naming the allowed values."""
    if name not in TFDS_DATASETS:
        raise ValueError(
            f"name: unknown tfds data set {name!r}; allowed values are {list(TFDS_DATASETS)}"
        )
    return name  # type: ignore[return-value]


def prepared_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The prepared directory ``<data_dir>/<name>/<version>`` of ``name``, checked locally.

    Only the local file system is looked at (never the network). Raises ValueError if
    ``data_dir`` is None or the data set was prepared in a format other than array_record,
    FileNotFoundError if ``data_dir`` or the prepared version is missing; every message names
    ``data_dir`` and says how to prepare the data set.
    """
    check_name(name)
    if data_dir is None:
        raise ValueError(
            f"data_dir: the tfds data set {name!r} is read from a local, prepared data "
            f"directory, but data_dir is None.\n{preparation_hint(name, data_dir)}"
        )
    if not isinstance(data_dir, str | os.PathLike):
        raise ValueError(f"data_dir: must be a path (str or os.PathLike), got {data_dir!r}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data_dir: {str(data_dir)!r} is not an existing local directory (needed for the "
            f"tfds data set {name!r}).\n{preparation_hint(name, data_dir)}"
        )
    version = str(_import_tfds().builder_cls(name).VERSION)
    path = root / name / version
    info_file = path / "dataset_info.json"
    if not info_file.is_file():
        found = sorted(p.parent.name for p in (root / name).glob("*/dataset_info.json"))
        also = f" (prepared versions found there: {found})" if found else ""
        raise FileNotFoundError(
            f"data_dir: the tfds data set {name!r} version {version} is not prepared in "
            f"{str(data_dir)!r}: {str(info_file)!r} does not exist{also}.\n"
            f"{preparation_hint(name, data_dir)}"
        )
    try:
        file_format = json.loads(info_file.read_text()).get("fileFormat", "tfrecord")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"data_dir: cannot read {str(info_file)!r} ({e}).\n{preparation_hint(name, data_dir)}"
        ) from e
    if file_format != "array_record":
        raise ValueError(
            f"data_dir: the tfds data set {name!r} in {str(path)!r} was prepared as "
            f"{file_format!r}; random access (tfds.data_source) needs 'array_record'.\n"
            f"{preparation_hint(name, data_dir)}"
        )
    return path


def area_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` float32 area-averaging weights (rows sum to 1).

    Output pixel ``i`` averages the input interval ``[i, i + 1) * n_in / n_out``, input pixels
    weighted by their overlap with it; a square image ``x`` ``[n_in, n_in]`` resizes to
    ``R @ x @ R.T`` ``[n_out, n_out]``.
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"n_out: must be in 1..{n_in} (downsampling only), got {n_out!r}")
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    pix = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], pix + 1) - np.maximum(edges[:-1, None], pix)
    return (np.clip(overlap, 0.0, None) / scale).astype(np.float32)


def omniglot_to_grey(images: np.ndarray, size: int | None) -> np.ndarray:
    """``[B, 105, 105, 3]`` uint8 -> ``[B, s, s, 1]`` uint8: channel mean, area-resized to ``size``.

    ``s = size``, or 105 when ``size`` is None.
    """
    b, h, w, _ = images.shape
    grey = (images[..., 0].astype(np.float32) + images[..., 1] + images[..., 2]) / 3.0
    if size is not None and size != h:
        if h != w:
            raise ValueError(f"images: expected square images, got shape {images.shape}")
        r = area_resize_matrix(h, size)
        # R @ x @ R.T for every image, as two large matrix products: [b*h, w] @ [w, s] ...
        cols = (grey.reshape(b * h, w) @ r.T).reshape(b, h, size).transpose(0, 2, 1)
        # ... then [b*s, h] @ [h, s], transposed back to [b, s (rows), s (columns)].
        grey = (cols.reshape(b * size, h) @ r.T).reshape(b, size, size).transpose(0, 2, 1)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]


def _read_split(
    source, limit: int | None, convert: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` (all if None) records of a data source -> ``(x [n, ...], y [n])``.

    Records are read in batches of READ_CHUNK with ``__getitems__``; each batch of images is
    passed through ``convert`` right away, so only one raw batch is held at a time.
    """
    n = len(source) if limit is None else min(len(source), limit)
    xs, ys = [], []
    for start in range(0, n, READ_CHUNK):
        records = source.__getitems__(list(range(start, min(n, start + READ_CHUNK))))
        xs.append(convert(np.stack([np.asarray(r["image"], np.uint8) for r in records])))
        ys.append(np.asarray([r["label"] for r in records], np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def split_valid(
    x: np.ndarray, y: np.ndarray, valid_fraction: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "valid"}``: a seeded random ``round(valid_fraction * n)`` rows are valid.

    Both parts keep the original row order. Raises ValueError if either would be empty.
    """
    n = int(y.shape[0])
    n_valid = int(round(valid_fraction * n))
    if not 1 <= n_valid <= n - 1:
        raise ValueError(
            f"valid_fraction: {valid_fraction} of {n} train examples gives {n_valid} valid and "
            f"{n - n_valid} train examples; both need at least 1 (raise max_examples_per_split "
            f"or change valid_fraction)"
        )
    perm = np.random.default_rng(seed).permutation(n)
    valid_idx, train_idx = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    return {"train": (x[train_idx], y[train_idx]), "valid": (x[valid_idx], y[valid_idx])}


def _check_options(valid_fraction, seed, max_examples_per_split, omniglot_size) -> None:
    if (
        isinstance(valid_fraction, bool)
        or not isinstance(valid_fraction, int | float)
        or not 0.0 < valid_fraction < 1.0
    ):
        raise ValueError(
            f"valid_fraction: must be a number strictly between 0 and 1, got {valid_fraction!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: must be an int, got {seed!r}")
    if max_examples_per_split is not None and (
        isinstance(max_examples_per_split, bool)
        or not isinstance(max_examples_per_split, int)
        or max_examples_per_split < 2
    ):
        raise ValueError(
            f"max_examples_per_split: must be None or an int >= 2, got {max_examples_per_split!r}"
        )
    if omniglot_size is not None and (
        isinstance(omniglot_size, bool)
        or not isinstance(omniglot_size, int)
        or not 1 <= omniglot_size <= OMNIGLOT_NATIVE_SIZE
    ):
        raise ValueError(
            f"omniglot_size: must be None (keep {OMNIGLOT_NATIVE_SIZE}) or an int in "
            f"1..{OMNIGLOT_NATIVE_SIZE}, got {omniglot_size!r}"
        )


def load_tfds(
    name: str,
    data_dir: str | os.PathLike | None,
    *,
    valid_fraction: float = DEFAULT_VALID_FRACTION,
    seed: int = TFDS_SPLIT_SEED,
    max_examples_per_split: int | None = None,
    omniglot_size: int | None = OMNIGLOT_SIZE,
) -> ArrayDataset:
    """Load tfds data set ``name`` from the prepared local ``data_dir`` as numpy arrays.

    Args:
      name: one of TFDS_DATASETS.
      data_dir: local tfds data directory holding ``<name>/<version>/`` in array_record format.
      valid_fraction: fraction of the tfds train split held out as ``valid`` (seeded).
      seed: seed of the valid hold-out.
      max_examples_per_split: for quick runs, read only the first this many records of the
        tfds train split (before the valid hold-out) and of the test split. tfds shuffles
        records when it prepares a data set, so these are a fixed, roughly random subset.
      omniglot_size: omniglot only: side of the grey images (area-averaged from 105), or None
        to keep 105.

    Returns:
      An :class:`ArrayDataset` with splits train / valid / test of ``x`` uint8
      ``[n, H, W, C]`` and ``y`` int32 ``[n]`` (shapes in the module docstring).

    Raises:
      ValueError: unknown ``name``, a bad option, ``data_dir=None``, or a data set prepared in
        a format other than array_record.
      FileNotFoundError: ``data_dir`` or the prepared data set in it is missing.
      ImportError: tensorflow_datasets (the ``tfds`` extra) is not installed.
    """
    check_name(name)
    _check_options(valid_fraction, seed, max_examples_per_split, omniglot_size)
    path = prepared_dir(name, data_dir)
    tfds = _import_tfds()
    train_src, test_src = tfds.data_source(
        f"{name}:{path.name}",
        split=["train", "test"],
        data_dir=os.fspath(path.parent.parent),
        download=False,
        try_gcs=False,
    )
    if name == "omniglot":
        convert = lambda x: omniglot_to_grey(x, omniglot_size)
    else:
        convert = lambda x: x
    splits = {}
    for split, src in (("train", train_src), ("test", test_src)):
        if len(src) == 0:
            raise ValueError(
                f"data_dir: the {split!r} split of {name!r} in {str(path)!r} has no examples.\n"
                f"{preparation_hint(name, data_dir)}"
            )
        splits[split] = _read_split(src, max_examples_per_split, convert)
    splits.update(split_valid(*splits["train"], valid_fraction, seed))
    num_classes = int(train_src.dataset_info.features["label"].num_classes)
    return ArrayDataset(
        splits={s: splits[s] for s in ("train", "valid", "test")},
        num_classes=num_classes,
        name=name,
    )

