"""SA-VAE (Kim et al. 2018): everything trains on the refined ELBO, through the refinement."""

from savae_tf.methods.base import Batch, Method


class SAVAE(Method):
  """Encoder and decoder on f(lambda_K), differentiated through the K refinement steps; the
  encoder learns only through lambda_0."""
  name = "savae"
  refines = True
  differentiates_refinement = True

  def refined_posterior(self, model, batch: Batch, mean0, logvar0):
    return model.refiner.posterior(model.objective, batch, mean0, logvar0, batch.gradient)
