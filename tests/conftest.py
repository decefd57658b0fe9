"""Test configuration: quiet TensorFlow, deterministic ops, CPU only.

Tests marked `gpu` need a real GPU: skipped without one. `SAVAE_TF_GPU_TESTS=1` (what
`bench/device_check.py` sets to run them) leaves the GPU visible; otherwise every test runs on the
CPU, and a test that needs TensorFlow to believe a GPU is there uses `simulated_gpu`.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU allocator then tracks its peak, which `devices.PeakMemory` reads (memory
# figures of tiny test models are lost in the process's resident memory).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
if os.environ.get("SAVAE_TF_GPU_TESTS") != "1":
  os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
  if not any(item.get_closest_marker("gpu") for item in items):
    return
  import tensorflow as tf
  if tf.config.list_physical_devices("GPU"):
    return
  skip = pytest.mark.skip(reason="needs a GPU (bench/device_check.py runs it where one is)")
  for item in items:
    if item.get_closest_marker("gpu"):
      item.add_marker(skip)


@contextlib.contextmanager
def simulated_gpu():
  """TensorFlow reports a GPU (physical and logical) while in the block, to whatever asks
  `tf.config` (savae_tf.devices, Keras' cuDNN and XLA choices); nothing runs on it."""
  import tensorflow as tf
  real_physical, real_logical = tf.config.list_physical_devices, tf.config.list_logical_devices

  def with_gpu(real, kind, name):
    def listing(device_type=None):
      devices = real(device_type)
      if device_type in (None, "GPU"):
        devices = devices + [kind(name=name, device_type="GPU")]
      return devices
    return listing

  tf.config.list_physical_devices = with_gpu(real_physical, tf.config.PhysicalDevice,
                                             "/physical_device:GPU:0")
  tf.config.list_logical_devices = with_gpu(real_logical, tf.config.LogicalDevice,
                                            "/device:GPU:0")
  try:
    yield
  finally:
    tf.config.list_physical_devices, tf.config.list_logical_devices = real_physical, real_logical


def assert_close_to_scale(actual, expected, rtol=1e-4, floor=1e-5, names=None):
  """Two float32 computations of one quantity (sequences of arrays matched in order, e.g. a
  gradient per variable) agree on any CPU kind.

  Each element may differ by `rtol` of itself plus `floor` times the largest element of the whole
  quantity, and the whole differs by at most `rtol` of its norm. Float32 rounding scales with the
  terms summed into an element, not with the element: a gradient that is zero in exact arithmetic
  (a convolution's bias before BatchNorm) holds only the rounding of the terms that cancel in it,
  and that rounding depends on the kernel's summation order, which differs between CPUs.
  """
  actual = [np.asarray(a, np.float64) for a in actual]
  expected = [np.asarray(e, np.float64) for e in expected]
  assert len(actual) == len(expected)
  names = names or [str(i) for i in range(len(expected))]
  whole = np.concatenate([e.ravel() for e in expected])
  scale = np.abs(whole).max()
  for name, a, e in zip(names, actual, expected):
    np.testing.assert_allclose(a, e, rtol=rtol, atol=floor * scale, err_msg=name)
  difference = np.concatenate([(a - e).ravel() for a, e in zip(actual, expected)])
  assert np.linalg.norm(difference) <= rtol * np.linalg.norm(whole), (
      f"relative difference {np.linalg.norm(difference) / np.linalg.norm(whole):.2e} > {rtol}")


@pytest.fixture
def linear_gaussian_data():
  """Factory: a float64 LinearGaussian with seeded N(0, 1) weights and a batch drawn from it."""
  import tensorflow as tf
  from savae_tf.networks.linear_gaussian import LinearGaussian

  def make(data_dim, noise_std, batch, weight_seed, data_seed):
    model = LinearGaussian(data_dim=data_dim, latent_dim=2, noise_std=noise_std, dtype="float64")
    rng = np.random.default_rng(weight_seed)
    model.kernel.assign(rng.normal(size=(2, data_dim)))
    model.bias.assign(rng.normal(size=(data_dim,)))
    x, _ = model.sample(batch, tf.constant(data_seed))
    return model, x

  return make


def write_text_corpus(directory, seed=0):
  """Writes a tiny train/val/test.txt corpus (160 / 24 / 24 sentences) into `directory`."""
  rng = np.random.default_rng(seed)
  words = "the a cat dog sat ran on mat big small red".split()
  directory.mkdir(exist_ok=True)
  for split, n in [("train.txt", 160), ("val.txt", 24), ("test.txt", 24)]:
    lines = [" ".join(rng.choice(words, rng.integers(2, 7))) for _ in range(n)]
    (directory / split).write_text("\n".join(lines) + "\n")
  return directory


@pytest.fixture
def text_corpus(tmp_path):
  """Factory: writes a tiny corpus (`write_text_corpus`) into tmp_path / name; returns the path."""
  return lambda name="data", seed=0: write_text_corpus(tmp_path / name, seed)


# Run in a fresh process that imports nothing of ours (the SavedModel must stand alone): calls
# every signature that takes examples on each batch composition and saves the outputs.
_COMPOSED_BATCHES = """
import sys
import numpy as np
import tensorflow as tf

path, inputs_path, out_path = sys.argv[1:]
signatures = tf.saved_model.load(path).signatures
given = np.load(inputs_path, allow_pickle=True)
pool, key = given["pool"], str(given["key"])
outputs = {}
for c in range(int(given["count"])):
  batch = tf.constant(pool[given[f"batch{c}"]].tolist() if key == "sentences"
                      else pool[given[f"batch{c}"]])
  encoded = signatures["encode"](**{key: batch})
  results = {
      "encode": encoded,
      "refine": signatures["refine"](**{key: batch}, mean=encoded["mean"],
                                     logvar=encoded["logvar"], steps=tf.constant(3)),
      "score": signatures["score"](**{key: batch}, steps=tf.constant(3),
                                   num_samples=tf.constant(7)),
      "elbo": signatures["elbo"](**{key: batch}, mean=encoded["mean"], logvar=encoded["logvar"],
                                 num_samples=tf.constant(60), seed=tf.constant(4)),
      "reconstruct": signatures["reconstruct"](
          **{key: batch}, steps=tf.constant(2),
          **({"max_length": tf.constant(8)} if key == "sentences" else {"seed": tf.constant(1)})),
  }
  for name, result in results.items():
    for output, value in result.items():
      outputs[f"{c}/{name}/{output}"] = value.numpy()
np.savez(out_path, **outputs)
"""


@pytest.fixture
def assert_batch_invariant(tmp_path):
  """Checks that each example's row of every example-taking signature of the SavedModel at
  `path` is the same alone and in batches of 2, 32 and 1,000 of other pool examples, at random
  positions (reloaded in a fresh process)."""
  import subprocess
  import sys

  def check(path, pool, key, rtol=1e-5, atol=1e-5, seed=0):
    rng = np.random.default_rng(seed)
    batches = [np.array([i]) for i in range(len(pool))]  # each example alone: the reference
    batches += [rng.integers(0, len(pool), size) for size in (2, 2, 32, 32, 1000)]
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, pool=np.asarray(pool, dtype=object if key == "sentences" else None),
             key=key, count=len(batches), **{f"batch{c}": b for c, b in enumerate(batches)})
    out = tmp_path / "outputs.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", _COMPOSED_BATCHES, path, str(inputs),
                             str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.load(out, allow_pickle=True)
    names = {name.split("/", 1)[1] for name in outputs.files}
    assert {"score/refined_nll_bound", "score/iw_nll", "refine/mean", "encode/mean",
            "elbo/elbo", "elbo/d_mean"} <= names
    for c in range(len(pool), len(batches)):
      for name in names:
        rows = outputs[f"{c}/{name}"]
        alone = np.concatenate([outputs[f"{i}/{name}"] for i in batches[c]])
        if rows.dtype == object:
          assert rows.tolist() == alone.tolist(), (c, name)
        else:
          np.testing.assert_allclose(rows, alone, rtol=rtol, atol=atol,
                                     err_msg=f"batch {c} of {len(batches[c])}, {name}")

  return check


def keras_model_of(path, endpoint, example):
  """A keras.Model whose one layer is `TFSMLayer(path, call_endpoint=endpoint)`, with one
  keras.Input per key of `example` (a dict of tensors): a scalar stays a scalar (the export's
  `steps`, `seed`, ... are not batched), any other input gets an unknown batch size."""
  import keras
  inputs = {key: keras.Input(batch_shape=(None, *value.shape[1:]) if value.shape.rank else (),
                             dtype=value.dtype.name, name=key)
            for key, value in example.items()}
  return keras.Model(inputs, keras.layers.TFSMLayer(path, call_endpoint=endpoint)(inputs))


def check_score_through_tfsm_layer(path, score_signature, in_memory_score, inputs, atol):
  """A Keras model over the export's `score_dict` returns exactly the `score` signature's
  outputs on `inputs`, and the in-memory model's to float32 rounding (`atol`)."""
  import numpy as np
  got = keras_model_of(path, "score_dict", inputs)(inputs)
  signature = score_signature(**inputs)
  assert set(got) == set(signature) == set(in_memory_score)
  for key, value in signature.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
    np.testing.assert_allclose(got[key], in_memory_score[key], rtol=1e-5, atol=atol, err_msg=key)
