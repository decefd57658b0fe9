"""Binarized images: a Bernoulli likelihood per pixel, nats per image, pictures.

Batches are {"images": float32 [batch, height, width, 1]} with values in {0, 1} (or Bernoulli
means in [0, 1]).
"""

import tensorflow as tf

from savae_tf import decoding
from savae_tf import distributions
from savae_tf import objectives
from savae_tf import pictures
from savae_tf import signatures
from savae_tf.domains.base import Domain, Observation


class ImageObservation(Observation):
  """Targets are the images themselves; every pixel is predicted (no mask)."""

  def nll(self, logits):
    """Bernoulli -log p(x | z) summed over every pixel."""
    return objectives.pixel_nll(logits, self.targets)

  def units(self):
    shape = tf.shape(self.targets)
    return tf.fill(shape[:1], tf.reduce_prod(shape[1:]))


class ImageDomain(Domain):
  """Images; metrics in nats per image (no perplexity); no artefacts; pictures drawn from the
  model (`savae_tf.pictures`)."""
  name = "images"
  input_name = "images"
  svi_lr = 0.02  # the MNIST subset's validation (RESULTS.md)

  def observe(self, data):
    if "images" not in data:
      raise ValueError(f"An image model needs batches {{'images': [batch, height, width, 1]}}; "
                       f"got keys {sorted(data)}.")
    images = data["images"]
    return ImageObservation((images,), images, images, None,
                            tf.cast(tf.round(images * 255.0), tf.int32))

  def export_module(self, model, artefacts):
    del artefacts
    return ImageModelExport(model)

  def pictures(self, model, test, model_dir, seed, count=8):
    count = min(count, test.num_images)
    if not count:
      return {}
    print("drawing the pictures (pixel by pixel)", flush=True)
    return pictures.save_pictures(model, test.images[..., None], model_dir, count,
                                  model.test_svi_steps, seed, progress=True)


class ImageModelExport(signatures.ModelExport):
  """Images float32 [B, height, width, 1] with values in [0, 1] in; binary images out."""

  def __init__(self, model):
    self.image_shape = tuple(model.decoder.image_shape)
    super().__init__(model, signatures.IMAGES, "savae_image_model")
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[latent_spec, signatures.INT("seed")], autograph=False)
    def generate(z, seed):
      return self.draw(z, seed, tf.shape(z)[0])

    @tf.function(input_signature=[signatures.INT("num"), signatures.INT("seed")], autograph=False)
    def sample(num, seed):
      z = self.prior_sample(num, seed)
      return {"z": z, **self.draw(z, seed, num)}

    @tf.function(input_signature=[signatures.IMAGES, signatures.INT("steps"), signatures.INT("seed")],
                 autograph=False)
    def reconstruct(images, steps, seed):
      # Pixel noise keyed by (seed, the input image), so a row does not depend on its batch.
      keys = model.observe(self.read(images)).example_seeds(seed)
      return self.draw(self.refined_mean(images, steps), keys, tf.shape(images)[0])

    self.generate, self.sample, self.reconstruct = generate, sample, reconstruct

  def read(self, inputs):
    height, width = self.image_shape
    # One check over rank and sizes (padding the shape keeps it valid at any rank).
    sizes = tf.pad(tf.shape(inputs), [[0, 4]])[1:4]
    shape_ok = tf.logical_and(tf.equal(tf.rank(inputs), 4),
                              tf.reduce_all(tf.equal(sizes, [height, width, 1])))
    in_range = tf.reduce_all((inputs >= 0.0) & (inputs <= 1.0))  # False for NaN too
    checks = [tf.debugging.Assert(shape_ok, [f"images must be float32[B, {height}, {width}, 1]"]),
              tf.debugging.Assert(in_range, ["image values must lie in [0, 1] (NaN is not "
                                             "allowed)"])]
    with tf.control_dependencies(checks):
      images = tf.ensure_shape(tf.identity(inputs), [None, height, width, 1])
    return {"images": images}

  def draw(self, z, seed, batch_size):
    """Images drawn at z; `seed` an int32 scalar (noise by position) or `ExampleSeeds`."""
    if not isinstance(seed, distributions.ExampleSeeds):
      seed = tf.stack([seed, 0])
    means, images = decoding.sample_images(self.model.decoder, self.latent(z), seed, batch_size)
    return {"means": means, "images": images}

