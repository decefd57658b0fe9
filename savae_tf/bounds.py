"""The objectives a method is given: the bound f(lambda, theta) it trains on and the refiner
refines.

`ELBO` is the per-example negative ELBO,

    f_b(lambda_b, theta) = -log p_theta(x_b | z_b) + beta * KL(q(z; lambda_b) || p(z)),

with z_b = mean_b + exp(logvar_b / 2) * eps_b and -log p(x | z) the domain's likelihood
(`Observation.nll`). The optimizer's loss is its batch mean (over every tf.distribute replica),
with free bits in the KL term when asked. Another bound (an importance-weighted one, say) is a
class with the same `terms` and `negative_elbo_terms`.
"""

from typing import NamedTuple, Optional

import tensorflow as tf

from savae_tf import distributions
from savae_tf import objectives


class PosteriorTerms(NamedTuple):
  """f's terms at one posterior lambda = (mean, logvar): per example -log p(x | z) and KL, and the
  training objective (the batch mean, with the KL weight and free bits)."""
  mean: tf.Tensor
  logvar: tf.Tensor
  nll: tf.Tensor
  kl: tf.Tensor
  loss: tf.Tensor
  tape: Optional[tf.GradientTape] = None  # recorded `loss` from lambda (`watch=True`)

  def lambda_gradient(self):
    """d loss / d (mean, logvar) (once; needs `watch=True`)."""
    return self.tape.gradient(self.loss, [self.mean, self.logvar])


class ELBO:
  """The negative ELBO of `decoder`'s p(x | z) and the standard normal prior.

  free_bits: lambda (nats) of free bits (Kingma et al. 2016, per dimension as Li et al. 2019):
  the training objective's KL is sum_d max(lambda, KL_d), KL_d the batch mean of latent dimension
  d's KL, so dimensions under lambda get no KL gradient. The training objective only: the
  refiner's steps and every reported bound use the true KL. 0: off.
  """

  def __init__(self, decoder, free_bits: float = 0.0):
    if free_bits < 0:
      raise ValueError(f"free_bits must be >= 0 nats; got {free_bits}.")
    self.decoder, self.free_bits = decoder, free_bits

  def terms(self, batch, mean, logvar, seed, watch=False) -> PosteriorTerms:
    """f's terms for `batch` (a `methods.Batch`) at lambda = (mean, logvar), one z from `seed`;
    with `watch`, recorded for `PosteriorTerms.lambda_gradient`."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
      if watch:
        tape.watch([mean, logvar])
      nll, kl = self.negative_elbo_terms(batch.context, batch.obs, mean, logvar, seed,
                                         batch.training)
      if self.free_bits and batch.training:
        loss = batch.mean(nll) + batch.kl_weight * objectives.free_bits_kl(mean, logvar,
                                                                           self.free_bits)
      else:
        loss = batch.mean(nll + batch.kl_weight * kl)
    return PosteriorTerms(mean, logvar, nll, kl, loss, tape if watch else None)

  def negative_elbo_terms(self, context, obs, mean, logvar, seed, training):
    """(-log p(x | z), KL) per example at lambda = (mean, logvar), one z drawn from `seed`
    (dropout masks too, when training); `context` is the decoder's z-independent work."""
    z_seed, dropout_seed = distributions.split(seed, 2)
    z = distributions.sample(mean, logvar, z_seed)
    logits = self.decoder.logits(context, z, training=training,
                                 seed=dropout_seed if training else None)
    return obs.nll(logits), distributions.kl_to_prior(mean, logvar)
