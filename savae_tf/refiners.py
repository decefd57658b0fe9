"""The refiners a method is given: lambda_0 -> lambda_K in K steps on the objective.

`SVIConfig` is SGD (Kim et al. 2018, Algorithm 1): its settings (shared by training and
evaluation) refine a batch's posterior (`posterior`) through `savae_tf.svi.refine`, whose gradient
modes say how the training gradient flows back through the K steps. `LearnedRefiner` is iterative
amortized inference (Marino et al. 2018): a network maps (lambda_k, the ELBO's gradient at
lambda_k) to lambda_{k+1}, trained with the model. A refiner is anything with `posterior` and
`get_config`; `REFINERS` names the kinds the binaries build (`--refiner`).
"""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

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


def refinement_loss(objective, batch):
  """Every refiner's per-example loss for `batch` (a `methods.Batch`): f = -log p(x | z) +
  beta KL at refinement step `step`, z and dropout from the batch's refinement seed and the step;
  `inputs[0]` is the decoder's z-independent work (passed as an input so the reverse sweep
  returns its gradient)."""

  def loss_fn(mean, logvar, step, inputs):
    nll, kl = objective.negative_elbo_terms(inputs[0], batch.obs, mean, logvar,
                                            distributions.step_seed(batch.seed_refine, step),
                                            batch.training)
    return nll + batch.kl_weight * kl

  return loss_fn


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
    # The decoder's z-independent work (`context`) is computed once and handed to the refiner
    # as an input, so the reverse sweep returns its gradient too.
    return config.refine(refinement_loss(objective, batch), mean0, logvar0, batch.steps, gradient,
                         inputs=[batch.context])


@keras.saving.register_keras_serializable(package="savae_tf")
class LearnedRefiner(keras.layers.Layer):
  """Iterative amortized inference (Marino, Yue and Mandt, ICML 2018) as a refiner.

  Step k reads lambda_k = (mean, logvar) and g_k = grad_lambda f(lambda_k) (each example's own
  gradient, noise keyed by step k as SGD's is), encodes each gradient as log(|g| + 1e-8) and
  sign(g) (their input encoding), and applies a gated ("highway") update:

      h = MLP(mean, logvar, log|g_mean|, sign g_mean, log|g_logvar|, sign g_logvar)
      lambda_{k+1} = lambda_k + (1 - sigmoid(W_gate h + b_gate)) * (W_delta h)

  which is Marino et al.'s gate * lambda_k + (1 - gate) * new with new = lambda_k + W_delta h.
  W_delta starts at zero, so an untrained refiner leaves lambda_0 where it is. logvar is kept in
  [-15, 15] (their clamp). Every layer acts on one example's row, so a sentence's lambda_K is
  its own, as SGD's per-example steps are.

  Gradients: in training, with any exact or approximate refine gradient mode, the tapes record
  all K steps (second order through g_k, as "unrolled"); the network learns from the loss at
  lambda_K, and so do lambda_0 and the decoder. With gradient "none" (the VAE+SVI methods), g_k
  is a constant to the tape (their first-order training): the network still learns from the loss
  at lambda_K through its updates, and nothing reaches lambda_0 or the decoder through the steps.
  """

  def __init__(self, latent_dim: int, units: int = 64, layers: int = 2, **kwargs):
    super().__init__(**kwargs)
    if latent_dim < 1 or units < 1 or layers < 1:
      raise ValueError(f"LearnedRefiner needs latent_dim, units and layers >= 1; got "
                       f"{latent_dim}, {units}, {layers}.")
    self.latent_dim, self.units, self.num_layers = latent_dim, units, layers
    dense = lambda size, name, **kw: keras.layers.Dense(  # noqa: E731
        size, name=name, dtype=self.dtype_policy, **kw)
    # Each layer an attribute of its own: tf.train.Checkpoint (the runs' weights, training's
    # checkpoints) does not see into a list of Keras 3 layers.
    for i in range(layers):
      setattr(self, f"hidden_{i}", dense(units, f"hidden_{i}", activation="elu"))
    self.delta = dense(2 * latent_dim, "delta", kernel_initializer="zeros")
    self.gate = dense(2 * latent_dim, "gate")
    self.build()  # its weights exist from the start, for checkpoints and saved weights alike

  def build(self, input_shape=None):
    size = 6 * self.latent_dim
    for layer in self.hidden_layers():
      layer.build((None, size))
      size = self.units
    self.delta.build((None, self.units))
    self.gate.build((None, self.units))
    self.built = True

  def hidden_layers(self):
    return [getattr(self, f"hidden_{i}") for i in range(self.num_layers)]

  def get_config(self):
    return {**super().get_config(), "latent_dim": self.latent_dim, "units": self.units,
            "layers": self.num_layers}

  def step(self, mean, logvar, g_mean, g_logvar):
    """lambda_{k+1} from lambda_k and the ELBO's gradient g_k there."""
    features = [mean, logvar]
    for g in (g_mean, g_logvar):
      features += [tf.math.log(tf.abs(g) + 1e-8), tf.sign(g)]
    h = tf.concat(features, -1)
    for layer in self.hidden_layers():
      h = layer(h)
    move = (1.0 - tf.sigmoid(self.gate(h))) * self.delta(h)
    move_mean, move_logvar = tf.split(move, 2, axis=-1)
    return mean + move_mean, tf.clip_by_value(logvar + move_logvar,
                                              tf.cast(-15.0, logvar.dtype), tf.cast(15.0, logvar.dtype))

  def refine(self, loss_fn, mean, logvar, steps, gradient: str = "unrolled", inputs=None):
    """lambda_K after `steps` learned steps on `loss_fn(mean, logvar, step[, inputs]) -> [batch]`
    (`svi.refine`'s contract); `gradient` "none" makes g_k a constant to enclosing tapes."""
    if gradient not in svi.GRADIENT_MODES:
      raise ValueError(f"Unknown refine gradient {gradient!r}; expected one of "
                       f"{svi.GRADIENT_MODES}.")
    call = (lambda m, v, k: loss_fn(m, v, k)) if inputs is None else (
        lambda m, v, k: loss_fn(m, v, k, inputs))

    def body(k, mean, logvar):
      with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([mean, logvar])
        total = tf.reduce_sum(call(mean, logvar, k))  # row b's gradient is example b's own
      g_mean, g_logvar = tape.gradient(total, [mean, logvar],
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
      if gradient == "none":
        g_mean, g_logvar = tf.stop_gradient(g_mean), tf.stop_gradient(g_logvar)
      return (k + 1, *self.step(mean, logvar, g_mean, g_logvar))

    _, mean, logvar = tf.while_loop(lambda k, *_: k < steps, body,
                                    (tf.constant(0), mean, logvar))
    return distributions.GaussianParams(mean, logvar)

  def posterior(self, objective, batch, mean0, logvar0, gradient=None):
    """lambda_K of `batch` (a `methods.Batch`), as `SVIConfig.posterior` (the same loss and
    noise per step), by the learned steps; `gradient` None: recorded whole ("unrolled")."""
    return self.refine(refinement_loss(objective, batch), mean0, logvar0, batch.steps,
                       gradient or "unrolled",
                       inputs=[batch.context])


REFINERS = ("sgd", "learned")
