"""Tests for savae_tf.pictures: grids, the three labelled pictures of a model, their files."""

import keras
import numpy as np
import tensorflow as tf

from savae_tf import pictures
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.image import GatedPixelCNN, ResNetEncoder


def test_grid_places_images_row_by_row_between_grey_borders():
  images = np.zeros((5, 2, 3, 1), np.float32)
  images[3] = 1.0  # second row, first column
  picture = pictures.grid(images, columns=3)
  assert picture.shape == (2 * 3 + 1, 3 * 4 + 1, 1) and picture.dtype == np.uint8
  assert np.all(picture[4:6, 1:4] == 255) and np.all(picture[1:3, 1:4] == 0)
  assert np.all(picture[0] == 128) and np.all(picture[:, 0] == 128)
  assert np.all(picture[4:6, 9:12] == 128)  # the sixth cell is empty


def model(latent):
  keras.utils.set_random_seed(0)
  return SemiAmortizedVAE(GatedPixelCNN(latent, channels=4, kernel_sizes=(3,), image_shape=(5, 5)),
                          ResNetEncoder(3, channels=4, stages=1, image_shape=(5, 5)),
                          mode="savae" if latent else "autoreg", latent_dim=3,
                          svi_config=SVIConfig(steps=2))


def test_model_pictures_of_a_vae_and_of_the_pixel_cnn(tmp_path):
  images = (np.random.default_rng(0).random((6, 5, 5, 1)) < 0.5).astype(np.float32)
  made = pictures.model_pictures(model(3), images, num=4, svi_steps=2)
  assert made["samples"].grid.shape == (2 * 6 + 1, 4 * 6 + 1, 1)
  traversal = made["traversal"]
  assert traversal.grid.shape == (3 * 6 + 1, 4 * 6 + 1, 1)  # one row per latent dimension
  assert sorted(traversal.rows) == ["z_0 from -3 to 3", "z_1 from -3 to 3", "z_2 from -3 to 3"]
  reconstructions = made["reconstructions"]
  assert reconstructions.grid.shape == (2 * 6 + 1, 4 * 6 + 1, 1)
  assert reconstructions.rows == ["test images", "drawn at the posterior mean (K = 2)"]
  # The first row shows the inputs themselves.
  np.testing.assert_array_equal(reconstructions.grid[1:6, 1:6, 0], images[0, ..., 0] * 255)
  assert set(np.unique(made["samples"].grid)) <= {0, 128, 255}
  assert set(pictures.model_pictures(model(0), images, num=2)) == {"samples"}
  paths = pictures.save_pictures(model(3), images, str(tmp_path), num=2)
  assert sorted(paths) == ["reconstructions", "samples", "traversal"]
  assert all(open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for path in paths.values())
  assert list((tmp_path / "logs" / "pictures").glob("events.*"))


def test_a_picture_is_drawn_with_its_title_and_a_caption_beside_each_row():
  grid = pictures.grid(np.zeros((6, 5, 5, 1), np.float32), columns=3)
  figure = pictures.labelled(pictures.Picture(grid, "savae: reconstructions",
                                              ["test images", "reconstructed"]))
  ax = figure.axes[0]
  assert ax.get_title() == "savae: reconstructions"
  assert [label.get_text() for label in ax.get_yticklabels()] == ["test images", "reconstructed"]
  np.testing.assert_allclose(ax.get_yticks(), [3.0, 9.0])  # the middles of the two rows
  np.testing.assert_array_equal(ax.get_images()[0].get_array(), grid[..., 0])


def test_traversal_rows_share_pixel_noise():
  """Images of one traversal row differ only through z: at a fixed z they are identical."""
  from savae_tf import decoding
  pixel_cnn = GatedPixelCNN(2, channels=4, kernel_sizes=(3,), image_shape=(5, 5))
  z = tf.constant([[0.3, -0.2]] * 4)
  drawn = decoding.sample_images(pixel_cnn, z, tf.constant([1, 0]), shared_noise=True).samples
  for image in drawn[1:]:
    np.testing.assert_array_equal(image, drawn[0])
