"""A linear-Gaussian latent-variable model, whose likelihood and posterior are known exactly.

    z ~ N(0, I_D),    x | z ~ N(W z + b, sigma^2 I_P)
    =>  x ~ N(b, W W^T + sigma^2 I),   p(z | x) = N(S W^T (x - b) / sigma^2, S),
        S = (I + W^T W / sigma^2)^-1.

The ELBO of a diagonal q(z; mean, logvar) is also closed form:

    ELBO = -1/2 [P log(2 pi sigma^2) + (||x - W mean - b||^2 + sum_d exp(logvar_d) ||W_:d||^2)
           / sigma^2] - KL(q || p).

It serves as the ground truth for the refiner demo and for the estimators' tests.
"""

import math

import keras
import tensorflow as tf

from savae_tf import distributions


@keras.saving.register_keras_serializable(package="savae_tf")
class LinearGaussian(keras.layers.Layer):
  """p(x | z) = N(W z + b, sigma^2 I): a decoder with an exact marginal likelihood."""

  def __init__(self, data_dim: int, latent_dim: int, noise_std: float = 1.0,
               **kwargs):
    super().__init__(**kwargs)
    self.data_dim = data_dim
    self.latent_dim = latent_dim
    self.noise_std = noise_std
    self.kernel = self.add_weight(shape=(latent_dim, data_dim), name="kernel",
                                  initializer=keras.initializers.RandomNormal(stddev=1.0))
    self.bias = self.add_weight(shape=(data_dim,), name="bias", initializer="zeros")

  def get_config(self):
    return {**super().get_config(), "data_dim": self.data_dim, "latent_dim": self.latent_dim,
            "noise_std": self.noise_std}

  def _variance(self):
    return tf.cast(self.noise_std**2, self.compute_dtype)

  def log_likelihood(self, x, z):
    """log p(x | z) per example; z may carry leading sample axes."""
    residual = x - (tf.matmul(z, self.kernel) + self.bias)
    return -0.5 * (self.data_dim * tf.math.log(2 * math.pi * self._variance())
                   + tf.reduce_sum(tf.square(residual), -1) / self._variance())

  def elbo(self, x, mean, logvar):
    """The closed-form ELBO of q(z; mean, logvar) per example."""
    residual = x - (tf.matmul(mean, self.kernel) + self.bias)
    trace = tf.reduce_sum(tf.exp(logvar) * tf.reduce_sum(tf.square(self.kernel), -1), -1)
    expected_ll = -0.5 * (self.data_dim * tf.math.log(2 * math.pi * self._variance())
                          + (tf.reduce_sum(tf.square(residual), -1) + trace) / self._variance())
    return expected_ll - distributions.kl_to_prior(mean, logvar)

  def log_marginal(self, x):
    """log p(x) per example, exactly."""
    covariance = (tf.matmul(self.kernel, self.kernel, transpose_a=True)
                  + self._variance() * tf.eye(self.data_dim, dtype=self.compute_dtype))
    return distributions.tfd.MultivariateNormalTriL(
        loc=self.bias, scale_tril=tf.linalg.cholesky(covariance)).log_prob(x)

  def posterior(self, x):
    """The exact posterior p(z | x) as a TFP distribution (full covariance)."""
    precision = (tf.eye(self.latent_dim, dtype=self.compute_dtype)
                 + tf.matmul(self.kernel, self.kernel, transpose_b=True) / self._variance())
    covariance = tf.linalg.inv(precision)
    mean = tf.matmul(x - self.bias, self.kernel, transpose_b=True) @ covariance / self._variance()
    return distributions.tfd.MultivariateNormalTriL(
        loc=mean, scale_tril=tf.linalg.cholesky(covariance))

  def sample(self, num, seed):
    """(x, z) drawn from the model with a stateless seed."""
    z_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    z = tf.random.stateless_normal([num, self.latent_dim], z_seed, dtype=self.compute_dtype)
    noise = tf.random.stateless_normal([num, self.data_dim], x_seed, dtype=self.compute_dtype)
    return tf.matmul(z, self.kernel) + self.bias + self.noise_std * noise, z
