"""The variational family, the prior and stateless noise, as TFP distributions.

The posterior is a diagonal Gaussian parameterised by lambda = (mean, logvar):

    q(z; lambda) = N(z; mean, diag(exp(logvar)))          p(z) = N(z; 0, I)

    KL(q || p) = -1/2 * sum_d (1 + logvar_d - mean_d^2 - exp(logvar_d))

Every function here is per example: a [batch, latent] input gives a [batch] output.
Noise comes from explicit stateless seeds (shape [2] int32 tensors) so that a draw can be
replayed exactly, which the reverse sweeps of `savae_tf.refine` rely on.
"""

from typing import NamedTuple, Optional

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


def step_seed(seed, step):
  """The seed for refinement step `step`, derived from a base seed of shape [2].

  The same (seed, step) always gives the same seed, so step k's noise can be drawn again in a
  reverse sweep; different steps give independent streams.
  """
  seed = tf.convert_to_tensor(seed)
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(step, seed.dtype))


def sample(mean, logvar, seed, num_samples: Optional[int] = None):
  """Reparameterised z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) from a stateless seed.

  Returns [batch, latent], or [num_samples, batch, latent] when `num_samples` is given.
  Gradients flow to `mean` and `logvar`; the same seed gives the same eps.
  """
  shape = tf.shape(mean)
  if num_samples is not None:
    shape = tf.concat([[num_samples], shape], axis=0)
  eps = tf.random.stateless_normal(shape, seed=seed, dtype=mean.dtype)
  return mean + tf.exp(0.5 * logvar) * eps

