"""Pictures of an image model, as PNG files and TensorBoard images.

Three pictures (`model_pictures`), each a grid of binary images drawn pixel by pixel:
  reconstructions  pairs of rows: test images, then images drawn from p(x | z) at their refined
                   posterior means (what the latent keeps of each image);
  samples          images drawn with z from the prior;
  traversal        one row per most-used latent dimension (largest variance of the posterior
                   means over the given images), z_d swept over [-3, 3] from the first image's
                   posterior mean; every image of a row uses the same pixel noise, so what changes
                   along a row is the latent's doing.
"""

import os
from typing import Dict

import numpy as np
import tensorflow as tf

from savae_tf import decoding

# Compiled: eagerly, each of the H x W decoder passes would pay Python overhead.
_sample_images = tf.function(decoding.sample_images)


def grid(images, columns: int, border: int = 1) -> np.ndarray:
  """Images [count, height, width, 1] in [0, 1] tiled row by row into one uint8 [H, W, 1] picture
  with grey borders."""
  images = np.asarray(images, np.float32)
  count, height, width = images.shape[:3]
  rows = -(-count // columns)
  picture = np.full((rows * (height + border) + border, columns * (width + border) + border, 1),
                    128, np.uint8)
  for index in range(count):
    row, col = divmod(index, columns)
    top, left = border + row * (height + border), border + col * (width + border)
    picture[top:top + height, left:left + width] = np.round(images[index] * 255).astype(np.uint8)
  return picture


def write_png(path: str, picture: np.ndarray) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tf.io.write_file(path, tf.io.encode_png(picture))
  return path


def model_pictures(model, images, num: int = 8, svi_steps: int = 0,
                   seed: int = 0) -> Dict[str, np.ndarray]:
  """{name: picture} for an image SemiAmortizedVAE; `images` [count >= num, H, W, 1] binary."""
  decoder = model.decoder
  pixel_seed = tf.constant([seed, 0])
  pictures = {}
  if model.latent_dim:
    prior_z = tf.random.stateless_normal([2 * num, model.latent_dim], [seed, 1])
  else:
    prior_z = None
  drawn = _sample_images(decoder, prior_z, pixel_seed, 2 * num).samples
  pictures["samples"] = grid(drawn, num)
  if not model.latent_dim:
    return pictures
  data = {"images": tf.constant(images[:num], tf.float32)}
  mean, logvar = model.initial_params(model.observe(data))
  mean = model.refine_for_evaluation(data, mean, logvar, svi_steps).mean
  rebuilt = _sample_images(decoder, mean, pixel_seed).samples
  pairs = np.concatenate([data["images"].numpy(), rebuilt.numpy()])
  pictures["reconstructions"] = grid(pairs, num)

  some = {"images": tf.constant(images[:512], tf.float32)}  # enough to rank the dimensions
  all_means = model.initial_params(model.observe(some))[0]
  dims = np.argsort(-np.var(all_means.numpy(), axis=0))[:min(4, model.latent_dim)]
  values = np.linspace(-3.0, 3.0, num, dtype=np.float32)
  z = np.repeat(mean.numpy()[:1], len(dims) * num, axis=0)
  for row, dim in enumerate(dims):
    z[row * num:(row + 1) * num, dim] = values
  swept = _sample_images(decoder, tf.constant(z), pixel_seed, shared_noise=True).samples
  pictures["traversal"] = grid(swept, num)
  return pictures


def enlarge(picture: np.ndarray, scale: int) -> np.ndarray:
  """Each pixel as a scale x scale block: 28-pixel digits are too small to look at."""
  return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


def save_pictures(model, images, model_dir: str, num: int = 8, svi_steps: int = 0,
                  seed: int = 0, scale: int = 3) -> Dict[str, str]:
  """Writes `model_pictures`, enlarged `scale` times, to <model_dir>/pictures/<name>.png and to
  TensorBoard (<model_dir>/logs/pictures); returns {name: PNG path}."""
  pictures = {name: enlarge(picture, scale)
              for name, picture in model_pictures(model, images, num, svi_steps, seed).items()}
  paths = {}
  writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "pictures"))
  with writer.as_default():
    for name, picture in pictures.items():
      paths[name] = write_png(os.path.join(model_dir, "pictures", f"{name}.png"), picture)
      tf.summary.image(name, picture[None], step=0)
  writer.flush()
  return paths
