"""Tests for savae_tf.pictures: grids, PNG files, the three pictures of a model."""

import keras
import numpy as np
import tensorflow as tf

from savae_tf import pictures
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder


def test_grid_places_images_row_by_row_between_grey_borders(tmp_path):
  images = np.zeros((5, 2, 3, 1), np.float32)
  images[3] = 1.0  # second row, first column
  picture = pictures.grid(images, columns=3)
  assert picture.shape == (2 * 3 + 1, 3 * 4 + 1, 1) and picture.dtype == np.uint8
  assert np.all(picture[4:6, 1:4] == 255) and np.all(picture[1:3, 1:4] == 0)
  assert np.all(picture[0] == 128) and np.all(picture[:, 0] == 128)
  assert np.all(picture[4:6, 9:12] == 128)  # the sixth cell is empty
  path = pictures.write_png(str(tmp_path / "sub" / "grid.png"), picture)
  np.testing.assert_array_equal(tf.io.decode_png(tf.io.read_file(path)), picture)


def model(latent):
  keras.utils.set_random_seed(0)
  return SemiAmortizedVAE(GatedPixelCNN(latent, channels=4, kernel_sizes=(3,), image_shape=(5, 5)),
                          ResNetEncoder(3, channels=4, stages=1, image_shape=(5, 5)),
                          mode="savae" if latent else "autoreg", latent_dim=3,
                          svi_config=SVIConfig(steps=2))


def test_model_pictures_of_a_vae_and_of_the_pixel_cnn(tmp_path):
  images = (np.random.default_rng(0).random((6, 5, 5, 1)) < 0.5).astype(np.float32)
  made = pictures.model_pictures(model(3), images, num=4, svi_steps=2)
  assert made["samples"].shape == (2 * 6 + 1, 4 * 6 + 1, 1)
  assert made["traversal"].shape == (3 * 6 + 1, 4 * 6 + 1, 1)  # one row per latent dimension
  reconstructions = made["reconstructions"]
  assert reconstructions.shape == (2 * 6 + 1, 4 * 6 + 1, 1)
  # The first row shows the inputs themselves.
  np.testing.assert_array_equal(reconstructions[1:6, 1:6, 0], images[0, ..., 0] * 255)
  assert set(np.unique(made["samples"])) <= {0, 128, 255}
  assert set(pictures.model_pictures(model(0), images, num=2)) == {"samples"}
  paths = pictures.save_pictures(model(3), images, str(tmp_path), num=2, scale=3)
  assert sorted(paths) == ["reconstructions", "samples", "traversal"]
  saved = tf.io.decode_png(tf.io.read_file(paths["samples"])).numpy()
  np.testing.assert_array_equal(saved[::3, ::3], pictures.model_pictures(model(3), images,
                                                                         num=2)["samples"])
  assert saved.shape == (3 * (2 * 6 + 1), 3 * (2 * 6 + 1), 1)
  assert list((tmp_path / "logs" / "pictures").glob("events.*"))


def test_traversal_rows_share_pixel_noise():
  """Images of one traversal row differ only through z: at a fixed z they are identical."""
  from savae_tf import decoding
  pixel_cnn = GatedPixelCNN(2, channels=4, kernel_sizes=(3,), image_shape=(5, 5))
  z = tf.constant([[0.3, -0.2]] * 4)
  drawn = decoding.sample_images(pixel_cnn, z, tf.constant([1, 0]), shared_noise=True).samples
  for image in drawn[1:]:
    np.testing.assert_array_equal(image, drawn[0])
