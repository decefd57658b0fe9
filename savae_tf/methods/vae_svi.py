"""VAE + SVI (Krishnan et al. 2018): the encoder on the amortized ELBO, the decoder on the
refined one."""

import tensorflow as tf

from savae_tf.methods.base import Batch, Method


class VAESVI(Method):
  """Decoder on f(lambda_K), refined from a detached lambda_0; encoder on f(lambda_0) only (the
  decoder gets no gradient from f(lambda_0))."""
  name = "vae_svi"
  refines = True

  def encoder_loss(self, batch: Batch, amortized, mean_k, logvar_k):
    # d f(lambda_0) / d lambda_0 pushed into the encoder alone: a surrogate whose gradient with
    # respect to the encoder is exactly that, and in which the decoder does not appear.
    g_mean, g_logvar = amortized.lambda_gradient()
    return (tf.reduce_sum(tf.stop_gradient(g_mean) * amortized.mean)
            + tf.reduce_sum(tf.stop_gradient(g_logvar) * amortized.logvar))
