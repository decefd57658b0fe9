"""The variational family, the prior and stateless noise, as TFP distributions.

The posterior is a diagonal Gaussian parameterised by lambda = (mean, logvar):

    q(z; lambda) = N(z; mean, diag(exp(logvar)))          p(z) = N(z; 0, I)

    KL(q || p) = -1/2 * sum_d (1 + logvar_d - mean_d^2 - exp(logvar_d))

Every function here is per example: a [batch, latent] input gives a [batch] output.
Noise comes from explicit stateless seeds so that a draw can be replayed exactly, which the reverse
sweeps of `savae_tf.refine` rely on. A seed is either
  - a shape [2] integer tensor (one stream for the whole batch: example b's draw depends on its
    position b and on the batch's shape), as training uses; or
  - `ExampleSeeds`: one key per example, made from the example's own content
    (`ExampleSeeds.of_content`), so that example b's draws are the same alone or in any batch, at
    any position. Evaluation and every exported signature use these;
  - `BatchRows`: a shape [2] seed's stream for a whole batch of which a replica holds some rows,
    so that under tf.distribute each example draws what it would draw on one device. Training
    on several replicas uses these.
`fold_in`, `split`, `standard_normal` and `uniform` take every kind.
"""

from typing import NamedTuple, Optional, Union

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class GaussianParams(NamedTuple):
  """lambda = (mean, logvar) of a diagonal Gaussian, each [batch, latent]."""
  mean: tf.Tensor
  logvar: tf.Tensor


def posterior(mean, logvar) -> tfd.Distribution:
  """q(z; mean, logvar) as a TFP distribution with event shape [latent]."""
  return tfd.MultivariateNormalDiag(loc=mean, scale_diag=tf.exp(0.5 * logvar))


def prior(latent_dim: int, dtype=tf.float32) -> tfd.Distribution:
  """p(z) = N(0, I) with event shape [latent_dim]."""
  return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim], dtype=dtype))


def kl_to_prior(mean, logvar):
  """Analytic KL(q(z; mean, logvar) || N(0, I)) per example, shape [batch]."""
  return -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mean) - tf.exp(logvar), axis=-1)


def kl_to_prior_per_dimension(mean, logvar):
  """`kl_to_prior`'s terms, one per latent dimension: [batch, latent]. (`kl_to_prior` sums
  before scaling, as it always has, so its float32 rounding is unchanged.)"""
  return -0.5 * (1.0 + logvar - tf.square(mean) - tf.exp(logvar))


_GOLDEN = 0x9E3779B9


def _mix(x):
  """A bijective 32-bit avalanche hash of uint32 values (the "lowbias32" finaliser)."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
  x = x * tf.constant(0x7FEB352D, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
  x = x * tf.constant(0x846CA68B, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _combine(keys, data):
  """A new uint32 key from a key and a datum (broadcasting)."""
  data = _mix(tf.cast(data, tf.uint32) + tf.constant(_GOLDEN, tf.uint32))
  return _mix(tf.bitwise.bitwise_xor(keys, data))


class ExampleSeeds(NamedTuple):
  """Per-example noise keys, uint32 [batch]: draws keyed by them do not depend on the batch."""
  keys: tf.Tensor

  @classmethod
  def of_content(cls, values, mask=None, seed=(0, 0)):
    """Keys of each example's integer content `values` [batch, ...] (token ids, pixel levels),
    counting only the entries where `mask` is True (padding never changes a key), folded with
    `seed` (two integers, e.g. the model's seed and a purpose)."""
    values = tf.cast(tf.reshape(values, [tf.shape(values)[0], -1]), tf.uint32)
    positions = _mix(tf.cast(tf.range(tf.shape(values)[1]) + 1, tf.uint32))
    hashed = tf.cast(_combine(positions[None, :], values), tf.int64)
    if mask is not None:
      mask = tf.reshape(mask, tf.shape(values))
      hashed *= tf.cast(mask, tf.int64)
      count = tf.reduce_sum(tf.cast(mask, tf.int32), -1)
    else:
      count = tf.fill(tf.shape(values)[:1], tf.shape(values)[1])
    total = tf.cast(tf.reduce_sum(hashed, -1) % (2**32), tf.uint32)  # exact: < 2^32 * length
    keys = _combine(total, count)
    for word in seed:
      keys = _combine(keys, word)
    return cls(keys)


class BatchRows(NamedTuple):
  """The stream of a shape [2] `seed` over a batch of `total` examples, of which only the rows
  at positions `rows` (int32 [local]) are here: a draw is made for the whole batch and these rows
  kept, so an example's noise does not depend on how the batch was split over replicas."""
  seed: tf.Tensor
  rows: tf.Tensor
  total: tf.Tensor

  def draw(self, draw_fn, shape, axis):
    """`draw_fn(seed, full_shape)` for the whole batch (axis `axis` of `shape` is the batch's),
    then this replica's rows along that axis."""
    shape = tf.convert_to_tensor(shape, tf.int32)
    index = tf.size(shape) + axis if axis < 0 else axis
    full_shape = tf.tensor_scatter_nd_update(shape, [[index]], tf.reshape(self.total, [1]))
    return tf.gather(draw_fn(self.seed, full_shape), self.rows, axis=axis)


Seed = Union[tf.Tensor, ExampleSeeds, BatchRows]


def fold_in(seed: Seed, data) -> Seed:
  """A seed for the sub-stream `data` (an integer): the same (seed, data) always gives the same
  seed; different data give independent streams."""
  if isinstance(seed, ExampleSeeds):
    return ExampleSeeds(_combine(seed.keys, data))
  if isinstance(seed, BatchRows):
    return seed._replace(seed=fold_in(seed.seed, data))
  seed = tf.convert_to_tensor(seed)
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, seed.dtype))


def split(seed: Seed, num: int):
  """`num` independent seeds derived from `seed`."""
  if isinstance(seed, ExampleSeeds):
    return [fold_in(seed, i) for i in range(num)]
  if isinstance(seed, BatchRows):
    return [seed._replace(seed=s) for s in split(seed.seed, num)]
  return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def step_seed(seed: Seed, step) -> Seed:
  """The seed for refinement step `step`: the same (seed, step) always gives the same noise, so
  step k's draw can be repeated in a reverse sweep; different steps give independent streams."""
  return fold_in(seed, step)


def standard_normal(seed: Seed, shape, dtype=tf.float32, first_sample=0):
  """N(0, 1) noise of `shape`, which is [batch, latent] or [samples, batch, latent].

  With `ExampleSeeds`, entry (s, b, d) is a function of (key b, sample `first_sample` + s, d)
  alone, so drawing samples in chunks gives the same numbers as drawing them at once. A shape
  [2] seed is one stateless stream for the whole tensor (`first_sample` folded in).
  """
  if isinstance(seed, BatchRows):
    return seed.draw(lambda s, full: standard_normal(s, full, dtype, first_sample), shape, -2)
  if not isinstance(seed, ExampleSeeds):
    if not isinstance(first_sample, int) or first_sample:
      seed = fold_in(seed, first_sample)
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype)
  shape = tf.convert_to_tensor(shape, tf.int32)
  samples = tf.reduce_prod(shape[:-2])
  latent = shape[-1]
  counter = ((tf.range(samples) + first_sample)[:, None] * latent
             + tf.range(latent)[None, :])  # [samples, latent]; bits: [samples, batch, latent]
  bits = _combine(seed.keys[None, :, None], tf.cast(counter, tf.uint32)[:, None, :])
  # Through the inverse normal CDF in float64, so that float64 callers get full-precision normals.
  return tf.cast(tf.reshape(tf.math.ndtri(_unit_interval(bits)), shape), dtype)


def _unit_interval(bits):
  """The top 24 bits of uint32 values as float64 uniforms strictly inside (0, 1)."""
  return (tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float64)
          + 0.5) * 2.0**-24


def uniform(seed: Seed, shape, dtype=tf.float32):
  """U(0, 1) noise of `shape` (batch first); with `ExampleSeeds` the shape is [batch], one draw
  per key."""
  if isinstance(seed, BatchRows):
    return seed.draw(lambda s, full: uniform(s, full, dtype), shape, 0)
  if not isinstance(seed, ExampleSeeds):
    return tf.random.stateless_uniform(shape, seed, dtype=dtype)
  return tf.cast(_unit_interval(seed.keys), dtype)


def sample(mean, logvar, seed: Seed, num_samples: Optional[int] = None, first_sample=0):
  """Reparameterised z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) from a stateless seed.

  Returns [batch, latent], or [num_samples, batch, latent] when `num_samples` is given (samples
  numbered from `first_sample`). Gradients flow to `mean` and `logvar`; the same seed gives the
  same eps.
  """
  shape = tf.shape(mean)
  if num_samples is not None:
    shape = tf.concat([[num_samples], shape], axis=0)
  eps = standard_normal(seed, shape, mean.dtype, first_sample)
  return mean + tf.exp(0.5 * logvar) * eps

