"""VAE + SVI + KL (Hjelm et al. 2016): the encoder chases the refined posterior."""

import tensorflow as tf

from savae_tf import distributions
from savae_tf.methods.base import Batch, Method


class VAESVIKL(Method):
  """Decoder on f(lambda_K); encoder on KL(q(lambda_0) || q(lambda_K)), lambda_K detached."""
  name = "vae_svi_kl"
  refines = True

  def encoder_loss(self, batch: Batch, amortized, mean_k, logvar_k):
    q0 = distributions.posterior(amortized.mean, amortized.logvar)
    q_k = distributions.posterior(*(tf.stop_gradient(x) for x in (mean_k, logvar_k)))
    return batch.mean(distributions.tfd.kl_divergence(q0, q_k))
