"""Tests for savae_tf.networks.image: the PixelCNN is autoregressive, shapes, BatchNorm, configs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from savae_tf.networks.image import (PAPER_KERNEL_SIZES, GatedMaskedLayer, GatedPixelCNN,
                                     ResNetEncoder, ResidualBlock)


def pixel_jacobian(decoder, images, z):
  """d logit_i / d x_j for one image: [pixels, pixels], pixels in raster order."""
  with tf.GradientTape() as tape:
    tape.watch(images)
    logits = decoder.logits(images, z)
  jacobian = tape.jacobian(logits, images)  # [1, H, W, 1, 1, H, W, 1]
  pixels = int(np.prod(images.shape[1:3]))
  return tf.reshape(jacobian, [pixels, pixels]).numpy()


@pytest.mark.parametrize("latent_dim, kernel_sizes", [(0, (5, 3, 3)), (3, (5, 3, 3)),
                                                      (3, PAPER_KERNEL_SIZES)])
def test_logit_of_each_pixel_depends_only_on_earlier_pixels(latent_dim, kernel_sizes):
  keras.utils.set_random_seed(0)
  height, width = 6, 5
  decoder = GatedPixelCNN(latent_dim, channels=4, kernel_sizes=kernel_sizes,
                          image_shape=(height, width))
  images = tf.random.uniform([1, height, width, 1], dtype=tf.float32)
  z = tf.random.normal([1, latent_dim]) if latent_dim else None
  jacobian = np.abs(pixel_jacobian(decoder, images, z))
  # Pixel j at or after pixel i in raster order never reaches logit i: strictly lower triangular.
  np.testing.assert_array_equal(np.triu(jacobian), 0.0)
  # And the causal neighbours do reach it: the pixel to the left and the one above.
  for i in range(height * width):
    row, col = divmod(i, width)
    if col > 0:
      assert jacobian[i, i - 1] > 0, f"pixel {i} ignores its left neighbour"
    if row > 0:
      assert jacobian[i, i - width] > 0, f"pixel {i} ignores the pixel above"


def test_receptive_field_covers_the_rows_above():
  """The vertical stack carries whole rows above (the blind spot of a naive masked conv is gone):
  the last pixel sees the first row's far right, which only the vertical stack can reach."""
  keras.utils.set_random_seed(1)
  decoder = GatedPixelCNN(0, channels=4, kernel_sizes=(5, 5, 5), image_shape=(5, 5))
  jacobian = np.abs(pixel_jacobian(decoder, tf.random.uniform([1, 5, 5, 1]), None))
  # Pixel (2, 0) depends on pixel (1, 2): up one row and right two columns.
  assert jacobian[2 * 5 + 0, 1 * 5 + 2] > 0


def test_latent_changes_every_logit_and_shapes():
  keras.utils.set_random_seed(2)
  decoder = GatedPixelCNN(4, channels=4, kernel_sizes=(3, 3), image_shape=(4, 4))
  images = tf.cast(tf.random.uniform([3, 4, 4, 1]) > 0.5, tf.float32)
  z = tf.random.normal([3, 4])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(z)
    logits = decoder(images, z)
    second, last = logits[:, 0, 1], logits[:, -1, -1]
  assert logits.shape == (3, 4, 4, 1)
  # z enters through the masked first layer, as in the paper, so pixel i sees the latent maps
  # at pixels before i: every pixel but the first depends on z.
  assert float(tf.norm(tape.gradient(second, z))) > 0
  assert float(tf.norm(tape.gradient(last, z))) > 0
  assert decoder.floats_per_target == 8 * 4


def test_paper_sizes():
  decoder = GatedPixelCNN(32)
  encoder = ResNetEncoder(32)
  assert decoder.kernel_sizes == PAPER_KERNEL_SIZES and len(decoder.gated_layers) == 12
  assert decoder.latent_maps.kernel.shape == (32, 4 * 28 * 28)
  assert decoder.gated_layers[0].vertical.kernel.shape == (5, 9, 5, 64)  # (k//2+1) x k over image + 4 maps
  assert encoder.mean_head.kernel.shape == (3 * 3 * 64, 32)  # 28 -> 14 -> 7 -> 3
  mean, logvar = encoder(tf.zeros([2, 28, 28, 1]))
  assert mean.shape == logvar.shape == (2, 32)


def test_encoder_batch_norm_uses_batch_statistics_only_when_training():
  keras.utils.set_random_seed(3)
  encoder = ResNetEncoder(3, channels=4, stages=2, image_shape=(8, 8))
  images = tf.cast(tf.random.uniform([4, 8, 8, 1]) > 0.5, tf.float32)
  inference = encoder(images, training=False)
  # Inference: each image alone gives the same answer as in the batch.
  np.testing.assert_allclose(encoder(images[:1], training=False).mean, inference.mean[:1],
                             rtol=1e-5, atol=1e-6)
  moving_before = [v.numpy() for v in encoder.non_trainable_variables]
  training = encoder(images, training=True)
  assert float(tf.reduce_max(tf.abs(training.mean - inference.mean))) > 1e-4
  moved = [not np.allclose(a, v.numpy()) for a, v in zip(moving_before,
                                                         encoder.non_trainable_variables)]
  assert all(moved)  # every moving mean and variance was updated


def test_even_kernels_and_too_many_stages_are_rejected():
  with pytest.raises(ValueError, match="odd"):
    GatedPixelCNN(2, kernel_sizes=(4, 3))
  with pytest.raises(ValueError, match="downsample"):
    ResNetEncoder(2, stages=3, image_shape=(4, 4))


@pytest.mark.parametrize("cls, kwargs", [
    (GatedPixelCNN, dict(latent_dim=3, channels=4, kernel_sizes=[5, 3], image_shape=[6, 6])),
    (GatedPixelCNN, dict(latent_dim=0, channels=4, kernel_sizes=[3], image_shape=[6, 6])),
    (ResNetEncoder, dict(latent_dim=3, channels=4, stages=2, image_shape=[6, 6]))])
def test_config_round_trip_gives_the_same_function(cls, kwargs):
  keras.utils.set_random_seed(4)
  layer = cls(**kwargs)
  clone = cls.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  for mine, theirs in zip(clone.weights, layer.weights):
    mine.assign(theirs)
  images = tf.random.uniform([2, 6, 6, 1])
  if cls is ResNetEncoder:
    np.testing.assert_allclose(clone(images).mean, layer(images).mean, rtol=1e-6)
  else:
    z = tf.random.normal([2, 3]) if kwargs["latent_dim"] else None
    np.testing.assert_allclose(clone(images, z), layer(images, z), rtol=1e-6)


@pytest.mark.parametrize("layer", [
    GatedMaskedLayer(3, 4, 2, first=True), ResidualBlock(4, 2, synchronized=True)])
def test_the_sublayers_are_keras_serializable(layer):
  clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
  assert [v.shape for v in clone.weights] == [v.shape for v in layer.weights]


def test_every_variable_is_in_a_checkpoint(tmp_path):
  """Sublayers must be reachable by tf.train.Checkpoint (Keras 3 lists are not)."""
  decoder = GatedPixelCNN(2, channels=4, kernel_sizes=(5, 3), image_shape=(6, 6))
  encoder = ResNetEncoder(2, channels=4, stages=2, image_shape=(6, 6))
  path = tf.train.Checkpoint(decoder=decoder, encoder=encoder).write(str(tmp_path / "ckpt"))
  saved = [name for name, _ in tf.train.list_variables(path) if "OPTIMIZER" not in name]
  assert len(saved) - 1 == len(decoder.variables) + len(encoder.variables)  # - the object graph
