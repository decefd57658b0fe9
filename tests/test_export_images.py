"""Tests for the image half of savae_tf.export: the image SavedModel contract of export/README.md."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import check_score_through_tfsm_layer
from savae_tf import export
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder

SIZE = 6
SIGNATURES = {"serving_default", "score", "encode", "refine", "elbo", "generate", "sample",
              "reconstruct"}
# Each signature's keyword inputs (the contract's names).
INPUTS = {"score": {"images", "steps", "num_samples"}, "encode": {"images"},
          "refine": {"images", "mean", "logvar", "steps"},
          "elbo": {"images", "mean", "logvar", "num_samples", "seed"}, "generate": {"z", "seed"},
          "sample": {"num", "seed"}, "reconstruct": {"images", "steps", "seed"}}


def image_model(mode="savae"):
  keras.utils.set_random_seed(3)
  latent = 0 if mode == "autoreg" else 2
  encoder = ResNetEncoder(2, channels=4, stages=1, image_shape=(SIZE, SIZE))
  decoder = GatedPixelCNN(latent, channels=4, kernel_sizes=(3, 3), image_shape=(SIZE, SIZE))
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=2,
                           svi_config=SVIConfig(steps=3))
  # Move BatchNorm's moving statistics off their initial values, so a lost one would show.
  encoder(tf.cast(tf.random.stateless_uniform([8, SIZE, SIZE, 1], [1, 1]) < 0.3, tf.float32),
          training=True)
  return model


def binary_images(count, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.random((count, SIZE, SIZE, 1)) < 0.4).astype(np.float32)


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
  model = image_model()
  return model, export.export(model, None, str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module")
def loaded_module(image_export):
  """The export, loaded once (no code of ours runs in it)."""
  return tf.saved_model.load(image_export[1])


@pytest.fixture(scope="module")
def loaded(loaded_module):
  """The export's signatures."""
  return loaded_module.signatures


CALL_ALL = """
import numpy as np
import tensorflow as tf

IMAGES = np.array(%r, np.float32)


def call_all(functions):
  images = tf.constant(IMAGES)
  encoded = functions["encode"](images=images)
  return {
      "encode": encoded,
      "refine": functions["refine"](images=images, mean=encoded["mean"],
                                    logvar=encoded["logvar"], steps=tf.constant(3)),
      "score": functions["score"](images=images, steps=tf.constant(4), num_samples=tf.constant(7)),
      "elbo": functions["elbo"](images=images, mean=encoded["mean"], logvar=encoded["logvar"],
                                num_samples=tf.constant(60), seed=tf.constant(2)),
      "generate": functions["generate"](z=tf.constant([[0.5, -1.0], [0.0, 2.0]]),
                                        seed=tf.constant(5)),
      "sample": functions["sample"](num=tf.constant(3), seed=tf.constant(9)),
      "reconstruct": functions["reconstruct"](images=images, steps=tf.constant(2),
                                              seed=tf.constant(1)),
  }
""" % (binary_images(3).tolist(),)
exec(CALL_ALL)

FRESH_PROCESS = CALL_ALL + """
import sys
loaded = tf.saved_model.load(sys.argv[1])
outputs = call_all(loaded.signatures)
np.savez(sys.argv[2], **{f"{name}/{key}": value.numpy() for name, result in outputs.items()
                         for key, value in result.items()})
"""


@pytest.fixture(scope="module")
def in_memory(image_export):
  """`call_all` through the export's model built in memory, not saved."""
  return call_all(export.model_export(image_export[0]).signatures())


def test_reloaded_in_a_fresh_process_matches_the_in_memory_model(image_export, in_memory,
                                                                 tmp_path):
  path = image_export[1]
  out = tmp_path / "outputs.npz"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  reloaded = np.load(out)
  assert {key.split("/")[0] for key in reloaded.files} == set(in_memory)
  for name, outputs in in_memory.items():
    for key, value in outputs.items():
      np.testing.assert_allclose(reloaded[f"{name}/{key}"], value.numpy(), rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name}/{key}")


def test_signatures_and_their_outputs(loaded):
  signatures = loaded
  assert set(signatures.keys()) == SIGNATURES
  images = tf.constant(binary_images(4))
  scores = signatures["score"](images=images, steps=tf.constant(5), num_samples=tf.constant(20))
  assert set(scores) == {"nll_bound", "refined_nll_bound", "kl", "iw_nll", "mean", "logvar", "z",
                         "mean0", "logvar0", "z0"}
  assert all(scores[k].shape == (4,) for k in ("nll_bound", "refined_nll_bound", "kl", "iw_nll"))
  assert all(scores[k].shape == (4, 2) for k in ("mean", "logvar", "z", "mean0", "logvar0", "z0"))
  # The importance-weighted NLL is below 36 log 2 plus the noise of an untrained model's bound.
  assert np.all(scores["iw_nll"].numpy() > 0)
  sampled = signatures["sample"](num=tf.constant(2), seed=tf.constant(3))
  assert sampled["images"].shape == sampled["means"].shape == (2, SIZE, SIZE, 1)
  assert set(np.unique(sampled["images"].numpy())) <= {0.0, 1.0}
  assert np.all((sampled["means"].numpy() > 0) & (sampled["means"].numpy() < 1))
  again = signatures["sample"](num=tf.constant(2), seed=tf.constant(3))
  np.testing.assert_array_equal(again["images"], sampled["images"])
  one = signatures["score"](images=images[:1], steps=tf.constant(2), num_samples=tf.constant(3))
  assert one["iw_nll"].shape == (1,)  # a batch of one


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, SIZE, SIZE)), r"images must be float32\[B, 6, 6, 1\]"),
    (np.zeros((2, SIZE + 1, SIZE, 1)), r"images must be float32\[B, 6, 6, 1\]"),
    (np.zeros((2, SIZE, SIZE, 3)), r"images must be float32\[B, 6, 6, 1\]"),
    (np.full((1, SIZE, SIZE, 1), 255.0), r"image values must lie in \[0, 1\]"),
    (np.full((1, SIZE, SIZE, 1), -0.5), r"image values must lie in \[0, 1\]"),
    (np.full((1, SIZE, SIZE, 1), np.nan), r"image values must lie in \[0, 1\]"),
])
def test_bad_images_are_an_error_that_names_the_problem(loaded, images, message):
  signatures = loaded
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    signatures["score"](images=tf.constant(images, tf.float32), steps=tf.constant(1),
                        num_samples=tf.constant(2))
  with pytest.raises(tf.errors.InvalidArgumentError, match=message) as error:
    signatures["encode"](images=tf.constant(images, tf.float32))
  assert export.error_message(error.value) in (  # what the binaries print
      "images must be float32[B, 6, 6, 1]", "image values must lie in [0, 1] (NaN is not allowed)")


def test_a_session_based_loader_runs_it_as_tf_serving_would(image_export):
  _, path = image_export
  cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
  result = subprocess.run(
      [str(cli), "run", "--dir", path, "--tag_set", "serve", "--signature_def", "sample",
       "--input_exprs", "num=2;seed=4"],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Result for output key images:" in result.stdout


def test_the_pixel_cnn_baseline_exports_with_an_empty_latent(tmp_path):
  path = export.export(image_model("autoreg"), None, str(tmp_path))
  signatures = tf.saved_model.load(path).signatures
  images = tf.constant(binary_images(2))
  scores = signatures["score"](images=images, steps=tf.constant(3), num_samples=tf.constant(4))
  np.testing.assert_allclose(scores["iw_nll"], scores["nll_bound"], rtol=1e-6)  # exact NLL
  assert signatures["encode"](images=images)["mean"].shape == (2, 0)
  assert signatures["sample"](num=tf.constant(2), seed=tf.constant(0))["images"].shape == (
      2, SIZE, SIZE, 1)


def test_an_image_gets_the_same_outputs_alone_and_in_any_batch(image_export,
                                                                 assert_batch_invariant):
  # encode, refine, score and reconstruct (its pixel draws included) row by row; BatchNorm in
  # inference mode, so the batch's statistics do not enter.
  _, path = image_export
  pool = np.concatenate([binary_images(6, seed=4), np.zeros((1, SIZE, SIZE, 1), np.float32),
                         np.ones((1, SIZE, SIZE, 1), np.float32)])
  assert_batch_invariant(path, pool, "images")


def test_every_signature_is_unchanged_and_has_a_one_dict_endpoint(loaded_module):
  signatures = loaded_module.signatures
  assert set(signatures) == SIGNATURES
  for name, inputs in INPUTS.items():
    positional, keywords = signatures[name].structured_input_signature
    assert positional == () and set(keywords) == inputs, name  # as TF Serving sees them
    # The endpoint takes one dict of exactly the signature's inputs (names, dtypes, shapes).
    endpoint = getattr(loaded_module, name + "_dict")
    assert [f.structured_input_signature for f in endpoint.concrete_functions] == [
        ((keywords,), {})], name
  # Their outputs: tests/test_export.py calls every text endpoint (the same wrapper); here the
  # Keras test below calls `score_dict`.


def test_a_keras_model_scores_through_tfsm_layer_as_the_signature_does(
    image_export, loaded, in_memory):
  # `call_all`'s score inputs; steps and num_samples differ, so a wrong routing would show.
  inputs = {"images": tf.constant(IMAGES), "steps": tf.constant(4), "num_samples": tf.constant(7)}
  check_score_through_tfsm_layer(image_export[1], loaded["score"], in_memory["score"], inputs,
                                 atol=1e-6)
