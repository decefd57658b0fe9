"""Drawing sentences and images from a decoder p(x | z), one token or pixel at a time.

One mechanism for every decoder with the `prepare`/`logits` interface: what has been drawn so far
lives in a fixed buffer (tokens [batch, max_length + 1] starting with `<s>`, or an image); step t
runs the decoder over the whole buffer and reads the output at position t. The decoder is causal,
so the not-yet-written positions do not matter. This costs O(length^2) decoder positions instead
of O(length) with a carried state, and in exchange works unchanged for any decoder (LSTM or
PixelCNN), with a tensor `max_length` and no retracing.
"""

from typing import NamedTuple, Optional

import tensorflow as tf

from savae_tf import distributions


class SampledImages(NamedTuple):
  means: tf.Tensor    # float32 [batch, height, width, 1]: p(x_i = 1 | x_<i, z) at each pixel
  samples: tf.Tensor  # float32 [batch, height, width, 1] in {0, 1}, drawn pixel by pixel


class Decoded(NamedTuple):
  tokens: tf.Tensor   # int32 [batch, max_length], without <s>; pad after the end token
  lengths: tf.Tensor  # int32 [batch], tokens up to and including the end token


def decode(decoder, z, bos_id: int, max_length, temperature, seed, eos_id: Optional[int] = None,
           pad_id: int = 0, batch_size=None) -> Decoded:
  """Tokens drawn from p(x | z) by ancestral sampling, or greedily when temperature == 0.

  Token t is drawn from softmax(logits_t / temperature) with the stateless seed
  `fold_in(seed, t)`; temperature 0 takes the argmax. After `eos_id` every position is `pad_id`.

  Args:
    decoder: `prepare(tokens)` and `logits(context, z)`.
    z: [batch, latent], or None for a decoder without a latent (then give `batch_size`).
    max_length: tokens to draw (a Python int or int32 scalar tensor), >= 0.
    temperature: float scalar >= 0.
    seed: int32 [2].
  """
  max_length = tf.convert_to_tensor(max_length, tf.int32)
  temperature = tf.convert_to_tensor(temperature, tf.float32)
  checks = [tf.debugging.assert_non_negative(max_length, message="max_length must be >= 0"),
            tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0")]
  with tf.control_dependencies(checks):
    batch = tf.shape(z)[0] if z is not None else tf.convert_to_tensor(batch_size, tf.int32)
  buffer = tf.concat([tf.fill([batch, 1], bos_id),
                      tf.fill([batch, max_length], pad_id)], axis=1)
  positions = tf.range(max_length + 1)[None, :]
  finished = tf.zeros([batch], tf.bool)
  lengths = tf.zeros([batch], tf.int32)

  def body(t, buffer, finished, lengths):
    logits = decoder.logits(decoder.prepare(buffer), z)[:, t]
    step_seed = tf.random.experimental.stateless_fold_in(seed, t)
    drawn = tf.random.stateless_categorical(
        logits / tf.maximum(temperature, 1e-6), 1, step_seed, dtype=tf.int32)[:, 0]
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    token = tf.where(temperature > 0, drawn, greedy)
    token = tf.where(finished, pad_id, token)
    lengths += tf.cast(~finished, tf.int32)
    if eos_id is not None:
      finished |= tf.equal(token, eos_id)
    buffer = tf.where(tf.equal(positions, t + 1), token[:, None], buffer)
    return t + 1, buffer, finished, lengths

  _, buffer, _, lengths = tf.while_loop(
      lambda t, *_: t < max_length, body, (tf.constant(0), buffer, finished, lengths))
  return Decoded(buffer[:, 1:], lengths)


def sample_images(decoder, z, seed, batch_size=None, shared_noise: bool = False) -> SampledImages:
  """Binary images drawn from p(x | z) pixel by pixel in raster order (ancestral sampling).

  Pixel i is 1 when u_i < p(x_i = 1 | x_<i, z), with u_i uniform from `fold_in(seed, i)`, so
  the same seed gives the same images. With `shared_noise` every image of the batch uses the same
  u_i, so images differ only through z (a latent traversal). With `distributions.ExampleSeeds`,
  image b's u_i come from key b alone (not from its position in the batch).

  Args:
    decoder: `prepare(images)`, `logits(context, z)` and `image_shape` (height, width).
    z: [batch, latent], or None for a decoder without a latent (then give `batch_size`).
    seed: int32 [2], or `distributions.ExampleSeeds` (one key per image).
  """
  height, width = decoder.image_shape
  batch = tf.shape(z)[0] if z is not None else tf.convert_to_tensor(batch_size, tf.int32)
  images = tf.zeros([batch, height, width, 1])
  means = tf.zeros([batch, height, width, 1])
  pixel_ids = tf.reshape(tf.range(height * width), [1, height, width, 1])

  def body(i, images, means):
    row, col = i // width, i % width
    mean = tf.sigmoid(decoder.logits(decoder.prepare(images), z)[:, row, col, 0])
    uniform = distributions.uniform(distributions.fold_in(seed, i),
                                    [1 if shared_noise else batch])
    pixel = tf.cast(uniform < mean, tf.float32)
    here = tf.equal(pixel_ids, i)
    images = tf.where(here, pixel[:, None, None, None], images)
    means = tf.where(here, mean[:, None, None, None], means)
    return i + 1, images, means

  _, images, means = tf.while_loop(lambda i, *_: i < height * width, body,
                                   (tf.constant(0), images, means))
  return SampledImages(means, images)
