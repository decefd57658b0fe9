"""What a training method is: how one batch becomes the losses the optimizer minimises.

A method reads the batch (`Batch`) and the model's parts (encoder, decoder, the objective
`model.objective`, the refiner `model.refiner`) and returns the per-example terms the model reports and the
losses it trains on: `loss`, and for methods that train the encoder on a separate objective,
`encoder_loss` (which must not reach the decoder). Which variables a loss trains follows from
what it depends on; the gradient-routing tests of tests/test_methods.py hold each method to it.

What composes with every method lives outside it: the KL weight schedule (`savae_tf.schedules`),
free bits (`bounds.ELBO`) and the refiner's settings (`refiners.SVIConfig`).
"""

from typing import Any, ClassVar, Dict, List, NamedTuple, Optional

import keras
import tensorflow as tf

from savae_tf import svi


class Batch(NamedTuple):
  """One batch as a method sees it."""
  obs: "Observation"  # savae_tf.domains.Observation
  context: tf.Tensor  # the decoder's z-independent work (`decoder.prepare`)
  seed_0: tf.Tensor  # noise of lambda_0's terms
  seed_k: tf.Tensor  # noise of lambda_K's terms
  seed_refine: tf.Tensor  # noise of the refinement steps
  training: bool
  kl_weight: tf.Tensor  # beta
  steps: tf.Tensor  # K
  gradient: Optional[str]  # the refiner's gradient mode (None: the model's)

  def mean(self, values):
    """The mean over the whole batch, across tf.distribute replicas: the replicas' gradients,
    which the optimizer sums, add up to the gradient of the whole batch's mean."""
    return tf.reduce_sum(values) / svi.global_batch_size(tf.shape(values)[0])


class Method:
  """A training variant. Subclasses set the class attributes and override the hooks.

  The default `forward`: lambda_0 from the encoder (or the prior's zeros without one), the
  amortized terms f(lambda_0) and, when refining, lambda_K from `refined_posterior` and its terms
  f(lambda_K), which the method trains on (`loss`); `encoder_loss` may add a separate encoder
  objective.
  """
  name: ClassVar[str]
  uses_latent: ClassVar[bool] = True  # False: no z at all (the language model)
  uses_encoder: ClassVar[bool] = True  # False: lambda_0 is the prior's (0, 0)
  refines: ClassVar[bool] = False  # trains on lambda_K, and evaluates refined by default
  differentiates_refinement: ClassVar[bool] = False  # gradients flow through the K steps
  # Its updates span batches or epochs (the hooks below): it trains only through
  # `savae_tf.training.train` (whose `actions.MethodHooks` call them), not a bare `fit`.
  needs_training_loop: ClassVar[bool] = False
  # Per-example refinement steps chosen on a domain's validation data for this method, by domain
  # name, where they differ from the domain's own (`Domain.svi_lr`, chosen for SA-VAE): a refiner
  # that starts from the prior must travel further than one that polishes an encoder's proposal.
  svi_lrs: ClassVar[Dict[str, float]] = {}

  def forward(self, model, batch: Batch, refine: bool) -> Dict[str, tf.Tensor]:
    out = {}
    mean0, logvar0 = model.initial_params(batch.obs, batch.training)
    out["mean0"], out["logvar0"] = mean0, logvar0
    amortized = None
    if self.uses_encoder:
      amortized = model.objective.terms(batch, mean0, logvar0, batch.seed_0, watch=True)
      out.update(nll_bound=amortized.nll + amortized.kl, kl=amortized.kl, loss=amortized.loss,
                 amortized_loss=amortized.loss)
    if not refine:
      return out
    mean_k, logvar_k = self.refined_posterior(model, batch, mean0, logvar0)
    refined = model.objective.terms(batch, mean_k, logvar_k, batch.seed_k)
    out.update(refined_nll_bound=refined.nll + refined.kl, kl=refined.kl, mean=mean_k,
               logvar=logvar_k, loss=refined.loss)
    encoder_loss = self.encoder_loss(batch, amortized, mean_k, logvar_k)
    if encoder_loss is not None:
      out["encoder_loss"] = encoder_loss
    return out

  def refined_posterior(self, model, batch: Batch, mean0, logvar0):
    """lambda_K. Default: refined from a detached lambda_0 with the gradient stopped, so the loss
    at lambda_K trains the decoder alone."""
    return model.refiner.posterior(model.objective, batch, tf.stop_gradient(mean0),
                                   tf.stop_gradient(logvar0), "none")

  def encoder_loss(self, batch: Batch, amortized, mean_k, logvar_k) -> Optional[tf.Tensor]:
    """A separate objective of the encoder (None: the encoder learns from `loss` alone)."""
    del batch, amortized, mean_k, logvar_k
    return None

  # --- Hooks of the training loop (`savae_tf.training.train`), for methods whose updates span
  # more than one batch. The defaults do nothing.

  def trained_variables(self, model) -> List[tf.Variable]:
    """The variables the optimizer's step updates, read when the step is traced."""
    return model.trainable_variables

  def clipped_with(self, model) -> List[tf.Variable]:
    """Variables the step does not update whose gradients still count in the optimizer's
    global-norm clip (read when the step is traced)."""
    del model
    return []

  def training_state(self, model) -> Dict[str, Any]:
    """Trackables the method keeps across batches, checkpointed with the run (so a resumed run
    continues exactly)."""
    del model
    return {}

  def callbacks(self, model, corpus) -> List[keras.callbacks.Callback]:
    """Keras callbacks to run during `fit` (`corpus`: the training batches, with `draw`)."""
    del model, corpus
    return []

  def after_epoch(self, model, validation: Dict[str, float]) -> Dict[str, float]:
    """Called after each epoch's validation with its metrics (empty without validation);
    returns what to add to the epoch's metrics.json entry."""
    del model, validation
    return {}
