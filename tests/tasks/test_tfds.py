"""tfds loading (tasks/data/tfds.py), without tensorflow and without network.

Two kinds of data:

* ``tfds.testing.mock_data`` (policy USE_CODE: examples generated from the builder's feature
  spec, the user's data_dir ignored by tfds). Our loader checks the prepared directory itself
  before calling tfds, so each mocked test first writes the real tfds metadata
  (``dataset_info.json``, ``features.json``; no records) for the data set into a tmp data_dir.
  In tfds 4.9.10 the mock's batched read is broken (``ArrayRecordDataSource.__getitems__`` is
  set to an unbound ``functools.partial`` on a MagicMock, so the call misses an argument); the
  ``mocked`` fixture routes ``BaseDataSource.__getitems__`` through the mock's working
  ``__getitem__``.
* A tiny real data set in tfds's array_record format, written with tfds's own
  ``SequentialWriter`` (PNG images encoded by PIL, no tensorflow), read through the real,
  unmocked ``tfds.data_source`` path: pixel-exact round trip.

Every test runs with sockets disabled: any attempt to reach the network fails the test.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from metaopt.tasks.classification import classification_task  # noqa: E402
from metaopt.tasks.data import registry  # noqa: E402
from metaopt.tasks.data.tfds import (  # noqa: E402
    TFDS_DATASETS,
    area_resize_matrix,
    load_tfds,
    omniglot_to_grey,
)
from metaopt.tasks.models import MLP  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail on any attempt to resolve a host name or open a connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


def skip_gcs_info():
    """Builders made on purpose where no metadata exists yet: skip tfds's GCS info lookup.

    It is disabled in tfds 4.9.10 (no network either way), but each call still leaves an empty
    ``tempfile.mkdtemp`` directory behind. The loader itself never gets there: it checks for
    the metadata first.
    """
    from tensorflow_datasets.core import dataset_info

    return mock.patch.object(
        dataset_info.DatasetInfo, "initialize_from_bucket", lambda self: None
    )


def write_metadata(data_dir: Path, name: str, file_format: str = "array_record") -> Path:
    """The real tfds metadata of ``name`` (no records) in ``data_dir/<name>/<version>``."""
    with skip_gcs_info():
        builder = tfds.builder(name, data_dir=str(data_dir), file_format=file_format)
    path = Path(builder.data_path)
    path.mkdir(parents=True)
    builder.info.write_to_directory(path)
    return path


@pytest.fixture
def mocked(monkeypatch):
    """``mock(num_examples)``: a context mocking tfds with that many examples per split."""
    from tensorflow_datasets.core import dataset_info
    from tensorflow_datasets.core.data_sources import base

    monkeypatch.setattr(
        base.BaseDataSource, "__getitems__", lambda self, keys: [self[k] for k in keys]
    )
    # USE_CODE makes builders on tfds's own fake, empty data_dir: see skip_gcs_info.
    monkeypatch.setattr(dataset_info.DatasetInfo, "initialize_from_bucket", lambda self: None)
    return lambda n: tfds.testing.mock_data(
        num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE
    )


def row_keys(x: np.ndarray) -> list[bytes]:
    return sorted(r.tobytes() for r in x.reshape(x.shape[0], -1))


def test_mocked_mnist_shapes_sizes_and_partition(tmp_path, mocked):
    write_metadata(tmp_path, "mnist")
    with mocked(60):
        d = load_tfds("mnist", tmp_path)
        ref = tfds.data_source("mnist", split="train", data_dir=str(tmp_path), download=False)
        ref_x = np.stack([ref[i]["image"] for i in range(len(ref))])
    assert d.name == "mnist" and d.num_classes == 10
    assert {s: d.size(s) for s in ("train", "valid", "test")} == {
        "train": 54, "valid": 6, "test": 60,
    }
    for x, y in d.splits.values():
        assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8
        assert y.dtype == np.int32 and y.ndim == 1 and ((0 <= y) & (y < 10)).all()
    # valid and train partition the tfds train split
    x_tr, x_va = d.splits["train"][0], d.splits["valid"][0]
    assert row_keys(np.concatenate([x_tr, x_va])) == row_keys(ref_x)
    assert not set(row_keys(x_tr)) & set(row_keys(x_va))


def test_mocked_split_is_seeded_and_capped(tmp_path, mocked):
    write_metadata(tmp_path, "mnist")
    with mocked(50):
        a = load_tfds("mnist", tmp_path, seed=3)
        b = load_tfds("mnist", tmp_path, seed=3)
        c = load_tfds("mnist", tmp_path, seed=4, max_examples_per_split=20, valid_fraction=0.25)
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.splits[s][0], b.splits[s][0])
    assert (c.size("train"), c.size("valid"), c.size("test")) == (15, 5, 20)


def test_mocked_mnist_feeds_a_classifier(tmp_path, mocked):
    write_metadata(tmp_path, "mnist")
    with mocked(80):
        d = load_tfds("mnist", tmp_path)
    model = MLP(hidden=(16,), out=d.num_classes)
    task = classification_task(model, d, batch_size=8, name="mnist")
    params = task.init(jax.random.key(0))
    b = task.batch(jax.random.key(1), "train")
    assert b["x"].shape == (8, 28, 28, 1) and b["x"].dtype == np.float32
    assert 0.0 <= float(b["x"].min()) and float(b["x"].max()) <= 1.0
    assert b["y"].shape == (8,) and b["y"].dtype == np.int32
    assert np.isfinite(float(task.loss(params, b)))


@pytest.mark.parametrize("size, side", [(28, 28), (None, 105)])
def test_mocked_omniglot_is_grey_and_resized(tmp_path, mocked, size, side):
    write_metadata(tmp_path, "omniglot")
    with mocked(20):
        d = load_tfds("omniglot", tmp_path, omniglot_size=size)
    assert d.num_classes == 1623
    for x, y in d.splits.values():
        assert x.shape[1:] == (side, side, 1) and x.dtype == np.uint8
        assert y.dtype == np.int32 and ((0 <= y) & (y < 1623)).all()


def test_real_array_record_round_trip(tmp_path):
    """A tiny mnist in tfds's array_record format, read through the unmocked data_source."""
    from PIL import Image

    with skip_gcs_info():
        builder = tfds.builder("mnist", data_dir=str(tmp_path), file_format="array_record")
    Path(builder.data_path).mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (30, 28, 28, 1), dtype=np.uint8),
              "test": rng.integers(0, 256, (7, 28, 28, 1), dtype=np.uint8)}
    labels = {s: rng.integers(0, 10, len(x)).astype(np.int32) for s, x in images.items()}
    writer = tfds.core.SequentialWriter(builder.info, 1000, file_format="array_record")
    writer.initialize_splits(["train", "test"])
    writer.add_examples({
        s: [{"image": Image.fromarray(im[..., 0]), "label": int(lb)}
            for im, lb in zip(images[s], labels[s], strict=True)]
        for s in images
    })
    writer.close_all()

    d = load_tfds("mnist", tmp_path)
    np.testing.assert_array_equal(d.splits["test"][0], images["test"])
    np.testing.assert_array_equal(d.splits["test"][1], labels["test"])
    # train and valid are disjoint, ordered subsets of the tfds train split that cover it
    index = {r.tobytes(): i for i, r in enumerate(images["train"])}
    rows = {s: np.array([index[r.tobytes()] for r in d.splits[s][0]]) for s in ("train", "valid")}
    assert sorted(np.concatenate([rows["train"], rows["valid"]])) == list(range(30))
    assert len(rows["valid"]) == 3 and all((np.diff(r) > 0).all() for r in rows.values())
    for s in ("train", "valid"):
        np.testing.assert_array_equal(d.splits[s][1], labels["train"][rows[s]])


def test_missing_data_set_fails_at_once(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        load_tfds("mnist", tmp_path)
    assert time.perf_counter() - start < 5.0
    msg = str(err.value)
    assert str(tmp_path) in msg and "data_dir" in msg
    assert "tfds build mnist" in msg and "array_record" in msg and ".[tfds]" in msg


@pytest.mark.parametrize("data_dir", [None, "/nonexistent/tfds_data"])
def test_no_data_dir_fails_at_once(data_dir):
    start = time.perf_counter()
    with pytest.raises((ValueError, FileNotFoundError), match="data_dir") as err:
        load_tfds("cifar10", data_dir)
    assert time.perf_counter() - start < 5.0
    assert str(data_dir) in str(err.value) and "tfds build cifar10" in str(err.value)


def test_tfrecord_preparation_is_rejected(tmp_path):
    write_metadata(tmp_path, "mnist", file_format="tfrecord")
    with pytest.raises(ValueError, match="array_record") as err:
        load_tfds("mnist", tmp_path)
    assert str(tmp_path) in str(err.value)


def test_unknown_name_and_bad_options():
    with pytest.raises(ValueError, match="name") as err:
        load_tfds("imagenet", "/tmp")
    assert all(n in str(err.value) for n in TFDS_DATASETS)
    for kwargs, field in [
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"max_examples_per_split": 1}, "max_examples_per_split"),
        ({"omniglot_size": 200}, "omniglot_size"),
        ({"seed": 0.5}, "seed"),
    ]:
        with pytest.raises(ValueError, match=field):
            load_tfds("mnist", "/tmp", **kwargs)


def test_missing_tfds_extra_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[tfds\]'"):
        load_tfds("mnist", tmp_path)


def test_registry_lists_the_same_names_and_needs_a_data_dir():
    assert tuple(registry.TFDS) == TFDS_DATASETS
    with pytest.raises(ValueError, match="data_dir"):
        registry.load_dataset("mnist", data_dir=None)


def test_area_resize():
    r = area_resize_matrix(105, 28)
    assert r.shape == (28, 105)
    np.testing.assert_allclose(r.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(area_resize_matrix(5, 5), np.eye(5, dtype=np.float32))
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    r2 = area_resize_matrix(4, 2)
    np.testing.assert_allclose(r2 @ x @ r2.T, [[2.5, 4.5], [10.5, 12.5]])
    rgb = np.full((2, 105, 105, 3), 200, np.uint8)
    out = omniglot_to_grey(rgb, 28)
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.uint8 and (out == 200).all()
    # a non-symmetric grey image: rows and columns are not swapped
    g = np.random.default_rng(0).integers(0, 256, (3, 105, 105), dtype=np.uint8)
    out = omniglot_to_grey(np.repeat(g[..., None], 3, axis=-1), 28)[..., 0].astype(np.int64)
    ref = np.rint(r @ g.astype(np.float32) @ r.T)
    assert np.abs(out - ref).max() <= 1
    np.testing.assert_array_equal(omniglot_to_grey(g[..., None].repeat(3, -1), None)[..., 0], g)
