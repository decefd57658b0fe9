"""Pictures of an image model, as labelled PNG files and TensorBoard images.

Three pictures (`model_pictures`), each a grid of binary images drawn pixel by pixel, with a
title and a caption per row:
  reconstructions  pairs of rows: test images, then images drawn from p(x | z) at their refined
                   posterior means (what the latent keeps of each image);
  samples          images drawn with z from the prior;
  traversal        one row per most-used latent dimension (largest variance of the posterior
                   means over the given images), z_d swept over [-3, 3] from the first image's
                   posterior mean; every image of a row uses the same pixel noise, so what changes
                   along a row is the latent's doing.
"""

import os
import sys
from typing import Dict, List, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from savae_tf import decoding
from savae_tf import figures

# Compiled: eagerly, each of the H x W decoder passes would pay Python overhead.
_sample_images = tf.function(decoding.sample_images, autograph=False)


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


class Picture(NamedTuple):
  grid: np.ndarray  # uint8 [H, W, 1], `grid`'s tiling
  title: str
  rows: List[str]  # a caption per row of images


def model_pictures(model, images, num: int = 8, svi_steps: int = 0, seed: int = 0,
                   progress: bool = False) -> Dict[str, Picture]:
  """{name: Picture} for an image SemiAmortizedVAE; `images` [count >= num, H, W, 1] binary.
  With `progress`, a progress bar over the pictures on a terminal (each is H x W decoder
  passes)."""
  decoder = model.decoder
  pixel_seed = tf.constant([seed, 0])
  names = ["samples", "reconstructions", "traversal"] if model.latent_dim else ["samples"]
  bar = (keras.utils.Progbar(len(names), unit_name="picture")
         if progress and sys.stdout.isatty() else None)
  pictures = {}
  prior_z = (tf.random.stateless_normal([2 * num, model.latent_dim], [seed, 1])
             if model.latent_dim else None)
  drawn = _sample_images(decoder, prior_z, pixel_seed, 2 * num).samples
  pictures["samples"] = Picture(
      grid(drawn, num), f"{model.mode}: samples, z from the prior" if model.latent_dim
      else f"{model.mode}: samples", ["samples", "samples"])
  if bar is not None:
    bar.add(1)
  if not model.latent_dim:
    return pictures
  data = {"images": tf.constant(images[:num], tf.float32)}
  mean, logvar = model.initial_params(model.observe(data))
  mean = model.refine_for_evaluation(data, mean, logvar, svi_steps).mean
  rebuilt = _sample_images(decoder, mean, pixel_seed).samples
  pairs = np.concatenate([data["images"].numpy(), rebuilt.numpy()])
  pictures["reconstructions"] = Picture(
      grid(pairs, num), f"{model.mode}: reconstructions",
      ["test images", f"drawn at the posterior mean (K = {svi_steps})"])
  if bar is not None:
    bar.add(1)

  some = {"images": tf.constant(images[:512], tf.float32)}  # enough to rank the dimensions
  all_means = model.initial_params(model.observe(some))[0]
  dims = np.argsort(-np.var(all_means.numpy(), axis=0))[:min(4, model.latent_dim)]
  values = np.linspace(-3.0, 3.0, num, dtype=np.float32)
  z = np.repeat(mean.numpy()[:1], len(dims) * num, axis=0)
  for row, dim in enumerate(dims):
    z[row * num:(row + 1) * num, dim] = values
  swept = _sample_images(decoder, tf.constant(z), pixel_seed, shared_noise=True).samples
  pictures["traversal"] = Picture(
      grid(swept, num), f"{model.mode}: latent traversal from the first image's posterior mean",
      [f"z_{dim} from -3 to 3" for dim in dims])
  if bar is not None:
    bar.add(1)
  return pictures


def labelled(picture: Picture, scale: float = 3.0):
  """A matplotlib figure of `picture`: its grid at `scale` screen pixels per image pixel, its
  title, and each row's caption beside the row."""
  plt = figures.pyplot()
  height, width = picture.grid.shape[:2]
  figure, ax = plt.subplots(figsize=(width * scale / 100 + 2.4, height * scale / 100 + 0.6))
  ax.imshow(picture.grid[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  row_height = (height - 1) / len(picture.rows)
  ax.set_yticks([row_height * (row + 0.5) for row in range(len(picture.rows))], picture.rows)
  ax.set_xticks([])
  ax.set_title(picture.title, fontsize="medium")
  return figure


def save_pictures(model, images, model_dir: str, num: int = 8, svi_steps: int = 0,
                  seed: int = 0, progress: bool = False) -> Dict[str, str]:
  """Writes `model_pictures`, `labelled`, to <model_dir>/pictures/<name>.png and to TensorBoard
  (<model_dir>/logs/pictures); returns {name: PNG path}. Raises figures.MissingPlotting without
  matplotlib (before drawing anything)."""
  figures.pyplot()
  made = model_pictures(model, images, num, svi_steps, seed, progress)
  return {name: figures.save(labelled(picture), os.path.join(model_dir, "pictures",
                                                              f"{name}.png"),
                             os.path.join(model_dir, "logs", "pictures"), name)
          for name, picture in made.items()}
