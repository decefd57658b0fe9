"""The refiner a method is given: K steps of SVI on the objective (Kim et al. 2018, Algorithm 1).

`SVIConfig` holds the refiner's settings (shared by training and evaluation) and refines a
batch's posterior (`posterior`) through `savae_tf.svi.refine`, whose gradient modes say how the
training gradient flows back through the K steps. A refiner of another kind (a learned one, say)
is a class with the same `posterior` and `get_config`.
"""

import dataclasses
from typing import Optional

import keras

from savae_tf import distributions
from savae_tf import svi

# The refiner's default step size per convention, for a refiner on its own. per_example: SA-VAE's
# on the synthetic experiment's validation set (the binaries take the step chosen for their
# method and data: `default_lr`); batch_mean: the paper's.
DEFAULT_SVI_LR = {"per_example": 0.003, "batch_mean": 1.0}


def default_lr(method, domain, step_scale: str = "per_example") -> float:
  """The step size a training method refines with on a domain's data by default: under
  batch_mean the paper's 1; per example, the step chosen on validation for that method and data
  (`Method.svi_lrs`), else the domain's (`Domain.svi_lr`, chosen for SA-VAE)."""
  if step_scale != "per_example":
    return DEFAULT_SVI_LR[step_scale]
  return method.svi_lrs.get(domain.name, domain.svi_lr)


@keras.saving.register_keras_serializable(package="savae_tf")
@dataclasses.dataclass(frozen=True)
class SVIConfig:
  """The refiner's settings, shared by training and evaluation. Keras-serializable (its config is
  its fields), so a user's own Keras model can hold one."""
  steps: int = 20
  lr: Optional[float] = None  # None: DEFAULT_SVI_LR[step_scale]
  momentum: float = 0.5
  max_grad_norm: Optional[float] = 5.0
  gradient: str = "reverse"
  step_scale: str = "per_example"
  batch_size: Optional[int] = None  # batch_mean: the training batch size
  keep_steps: int = 0  # the reverse sweep's memory budget (`svi.refine`)

  def __post_init__(self):
    if self.lr is None and self.step_scale in DEFAULT_SVI_LR:
      object.__setattr__(self, "lr", DEFAULT_SVI_LR[self.step_scale])
    if self.steps < 0:
      raise ValueError(f"SVI steps must be >= 0; got {self.steps}.")
    if self.keep_steps < 0:
      raise ValueError(f"keep_steps must be >= 0; got {self.keep_steps}.")
    if self.keep_steps and self.gradient not in svi.SWEPT_MODES:
      raise ValueError(f"keep_steps is a budget of the reverse sweep: it needs gradient "
                       f"{' or '.join(svi.SWEPT_MODES)}, not {self.gradient!r}.")
    if self.gradient not in svi.GRADIENT_MODES:
      raise ValueError(f"Unknown refine gradient {self.gradient!r}; expected one of "
                       f"{svi.GRADIENT_MODES}.")
    if self.step_scale not in svi.STEP_SCALES:
      raise ValueError(f"Unknown SVI step_scale {self.step_scale!r}; expected one of "
                       f"{svi.STEP_SCALES}.")
    if self.step_scale == "batch_mean" and not (self.batch_size and self.batch_size > 0):
      raise ValueError("step_scale 'batch_mean' needs the training batch_size (>= 1), which "
                       "sets the per-example step at evaluation.")

  def get_config(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def per_example_equivalent(self) -> "SVIConfig":
    """The per-example refiner that evaluation uses for a model trained with these settings.

    batch_mean at step lr and clip c with batches of B moves each example by lr / B of its own
    gradient, and its clip over the [B, latent] block binds wherever one example's gradient norm
    exceeds c * B (and may bind below that): so lr / B and a per-example clip of c * B, equal to
    the batch_mean step wherever its block clip does not bind."""
    if self.step_scale == "per_example":
      return self
    return dataclasses.replace(
        self, step_scale="per_example", batch_size=None, lr=self.lr / self.batch_size,
        max_grad_norm=None if self.max_grad_norm is None
        else self.max_grad_norm * self.batch_size)

  def refine(self, loss_fn, mean, logvar, steps=None, gradient=None, inputs=None):
    """`svi.refine` of `loss_fn` (per example) from (mean, logvar) with these settings; `steps`
    and `gradient` (None: the config's) may be overridden."""
    gradient = gradient or self.gradient
    return svi.refine(loss_fn, mean, logvar, self.steps if steps is None else steps,
                      lr=self.lr, momentum=self.momentum, max_grad_norm=self.max_grad_norm,
                      gradient=gradient, inputs=inputs, step_scale=self.step_scale,
                      keep_steps=self.keep_steps if gradient in svi.SWEPT_MODES else 0)

  def posterior(self, objective, batch, mean0, logvar0, gradient=None):
    """lambda_K of `batch` (a `methods.Batch`): K SVI steps on the objective's per-example
    f = -log p(x | z) + beta KL from lambda_0 = (mean0, logvar0), with gradient mode `gradient`
    (None: the config's). Step k's z and dropout come from the batch's refinement seed and k.

    Training refines with these settings; evaluation with their per-example equivalent, so that
    no example's refinement depends on its batch.
    """
    config = self if batch.training else self.per_example_equivalent()

    def loss_fn(mean, logvar, step, inputs):
      nll, kl = objective.negative_elbo_terms(inputs[0], batch.obs, mean, logvar,
                                              distributions.step_seed(batch.seed_refine, step),
                                              batch.training)
      return nll + batch.kl_weight * kl

    # The decoder's z-independent work (`context`) is computed once and handed to the refiner
    # as an input, so the reverse sweep returns its gradient too.
    return config.refine(loss_fn, mean0, logvar0, batch.steps, gradient, inputs=[batch.context])
