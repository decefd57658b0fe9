"""SemiAmortizedVAE: a latent-variable model trained by any method of `savae_tf.methods`.

The model holds the parts and Keras' steps; the parts hold the mathematics:
  networks   encoder x -> lambda_0 = (mean, logvar); decoder (x, z) -> logits (`networks`)
  domain     how a batch is read and what -log p(x | z) is (`domains`, named by the decoder)
  method     what one batch trains, by which loss (`methods`; `mode` names it)
  objective  the bound f(lambda, theta) (`bounds.ELBO`), per example
  refiner    lambda_0 -> lambda_K in K steps: SGD (`refiners.SVIConfig`) or learned
             (`refiners.LearnedRefiner`)
The optimizer's loss is the batch mean; averaging happens once, in `train_step`.

Noise: training draws from one stateless stream per batch (keyed by the optimizer's step, so a
resumed run repeats it); evaluation (`test_step`, `score`, and so every exported signature) keys
every draw by the example's own content and refines per example (`savae_tf.scoring`).

Despite its name (kept: saved models and users' code name it) it is every method's model: the
language model (`mode="autoreg"`, no latent), the VAE, SVI, VAE+SVI(+KL), SA-VAE, aggressive.
"""

from typing import Optional

import keras
import tensorflow as tf

from savae_tf import bounds
from savae_tf import distributions
from savae_tf import domains
from savae_tf import methods
from savae_tf import replicas
from savae_tf import schedules
from savae_tf import scoring
from savae_tf import svi
from savae_tf.refiners import DEFAULT_SVI_LR, SVIConfig  # noqa: F401  (their old home)
from savae_tf.refiners import LearnedRefiner

MODES = tuple(methods.METHODS)


@keras.saving.register_keras_serializable(package="savae_tf")
class SemiAmortizedVAE(keras.Model):
  """Encoder + decoder + refiner, trained by method `mode` (see the module docstring).

  Saved in Keras' format (`model.save("m.keras")`; `keras.saving.load_model` after
  `import savae_tf`) with its settings, and its optimizer's state when compiled (docs/keras.md);
  the binaries save with `savae_tf.runs`.
  """

  def __init__(self, decoder, encoder=None, mode: str = "savae", latent_dim: int = 32,
               svi_config: SVIConfig = SVIConfig(), test_svi_steps: Optional[int] = None,
               kl_schedule=schedules.Constant(), free_bits: float = 0.0,
               pretrain_steps: int = 0, eval_num_samples: int = 0,
               active_unit_threshold: float = 0.01, seed: int = 3435,
               generation_length: Optional[int] = None,
               refiner: Optional[LearnedRefiner] = None, **kwargs):
    """
    Args:
      decoder: a layer with `domain` (a name of `savae_tf.domains`), `floats_per_target`,
        `prepare(inputs, training, seed)` and `logits(context, z, training, seed)`.
      encoder: a layer `(*Observation.encoder_inputs, training) -> GaussianParams`; required by
        methods with an encoder (`Method.uses_encoder`).
      kl_schedule: beta, the KL weight, per training batch (`savae_tf.schedules`; default 1),
        inside the refinement too; evaluation always uses beta = 1.
      free_bits: nats per latent dimension of free bits in the training objective (`bounds.ELBO`).
      pretrain_steps: autoencoder pretraining (Li et al. 2019): beta = 0 for the first
        `pretrain_steps` batches, then `kl_schedule` counted from there (the training loop's
        `actions.PretrainingReset` gives the decoder fresh weights then).
      test_svi_steps: K at evaluation (default: the training K).
      eval_num_samples: importance samples for `iw_nll` in `test_step` (0: skip it).
      generation_length: text: the longest training sequence after the start token, what
        generation draws unless told (`savae_tf.export`); None: not recorded.
      refiner: a `refiners.LearnedRefiner` to refine with instead of SGD (`svi_config` still
        gives K, `steps`, and the test-time K); trained with the model. None: SGD.
    """
    super().__init__(**kwargs)
    self.method = methods.get(mode)
    if self.method.uses_encoder and encoder is None:
      raise ValueError(f"mode {mode!r} needs an encoder.")
    if pretrain_steps < 0 or (pretrain_steps and not self.method.uses_encoder):
      raise ValueError(f"pretrain_steps must be >= 0, and only a method with an encoder "
                       f"pretrains one; got {pretrain_steps} with {mode!r}.")
    if refiner is not None and not self.method.refines:
      raise ValueError(f"A learned refiner needs a method that refines; {mode!r} does not.")
    if (self.method.differentiates_refinement
        and (refiner is not None or svi_config.gradient in svi.EXACT_MODES)
        and not getattr(decoder, "has_second_order_gradient", True)):
      raise ValueError(
          f"Refine gradient {svi_config.gradient!r} differentiates the decoder's gradient, and "
          "the decoder would run cuDNN's LSTM kernel, which has no second-order gradient. Build "
          "the decoder with use_cudnn=False, or use gradient 'finite_difference'.")
    self.decoder = decoder
    self.encoder = encoder if self.method.uses_encoder else None
    self.domain = domains.of(decoder)
    self.objective = bounds.ELBO(decoder, free_bits)
    self.mode = mode
    self.latent_dim = latent_dim if self.method.uses_latent else 0
    self.svi_config = svi_config
    self.learned_refiner = refiner
    self.test_svi_steps = svi_config.steps if test_svi_steps is None else test_svi_steps
    self.kl_schedule = kl_schedule
    self.free_bits = free_bits
    self.pretrain_steps = pretrain_steps
    self.eval_num_samples = eval_num_samples
    self.seed = seed
    self.active_unit_threshold = active_unit_threshold
    self.generation_length = generation_length
    self.refines = self.method.refines
    # Progress in Keras' logs only: every reported number comes from `savae_tf.evaluate`.
    self.trackers = {name: keras.metrics.Mean(name=name) for name in
                     ["loss", "nll_bound", "kl"] + (["refined_nll_bound"] if self.refines else [])}
    self.eval_trackers = {name: keras.metrics.Mean(name=name) for name in
                          ["nll_bound", "kl", "iw_nll"]
                          + (["refined_nll_bound"] if self.refines else [])}
    self.built = True

  @property
  def refiner(self):  # what a method refines with: the learned refiner, else SGD's settings
    return self.svi_config if self.learned_refiner is None else self.learned_refiner

  def get_config(self):
    # The refiner's and the schedule's configs are inlined, as config.json (`savae_tf.runs`) has
    # always stored them.
    serialize = keras.saving.serialize_keras_object
    return {"decoder": serialize(self.decoder),
            "encoder": None if self.encoder is None else serialize(self.encoder),
            "mode": self.mode, "latent_dim": self.latent_dim,
            "svi_config": self.svi_config.get_config(), "test_svi_steps": self.test_svi_steps,
            "kl_schedule": self.kl_schedule.get_config(), "free_bits": self.free_bits,
            "pretrain_steps": self.pretrain_steps, "eval_num_samples": self.eval_num_samples,
            "active_unit_threshold": self.active_unit_threshold, "seed": self.seed,
            "generation_length": self.generation_length,
            **({"refiner": serialize(self.learned_refiner)} if self.learned_refiner else {})}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    deserialize = keras.saving.deserialize_keras_object
    config["decoder"] = deserialize(config["decoder"])
    config["encoder"] = config["encoder"] and deserialize(config["encoder"])
    config["svi_config"] = SVIConfig.from_config(config["svi_config"])
    if config.get("refiner") is not None:
      config["refiner"] = deserialize(config["refiner"])
    if "kl_warmup_steps" in config:  # saved before schedules: a linear warm-up, or none
      warmup, start = config.pop("kl_warmup_steps"), config.pop("kl_start", 0.1)
      config["kl_schedule"] = (schedules.Linear(warmup, start) if warmup
                               else schedules.Constant())
    if isinstance(config.get("kl_schedule"), dict):
      config["kl_schedule"] = schedules.from_config(config["kl_schedule"])
    return cls(**config)

  def _resolve_auto_jit_compile(self):
    # Keras' "auto" would compile whole image steps with XLA on a GPU (never measured; XLA drops
    # the NaN stop's Assert); `jit_compile=True` still asks for it (docs/devices.md).
    return False

  @property
  def metrics(self):
    return list(self.trackers.values()) + list(self.eval_trackers.values())

  def kl_weight(self, step):
    """beta at the 0-based training batch `step`: 0 while the autoencoder pretrains, then the
    schedule's, counted from the end of pretraining."""
    if not self.pretrain_steps:
      return self.kl_schedule(step)
    after = tf.cast(step, tf.int64) - self.pretrain_steps
    return tf.where(after < 0, 0.0, self.kl_schedule(tf.maximum(after, 0)))

  def observe(self, data) -> domains.Observation:
    return self.domain.observe(data)

  def initial_params(self, obs: domains.Observation, training=False):
    """lambda_0: the encoder's (mean, logvar), or the prior's (zeros) without an encoder."""
    if self.encoder is not None:
      return self.encoder(*obs.encoder_inputs, training=training)
    zeros = tf.zeros([tf.shape(obs.targets)[0], self.latent_dim])
    return distributions.GaussianParams(zeros, zeros)

  def batch(self, data, seed, training, kl_weight, steps, gradient) -> methods.Batch:
    """One batch as a method sees it; its seeds for lambda_0's terms, lambda_K's and the
    refinement steps are split from `seed`."""
    obs = self.observe(data)
    # The decoder's z-independent work (and its dropout masks) once per batch, shared by
    # lambda_0's, every refinement step's and lambda_K's terms.
    context = self.decoder.prepare(obs.decoder_inputs, training=training,
                                   seed=distributions.fold_in(seed, 3) if training else None)
    return methods.Batch(obs, context, *distributions.split(seed, 3), training, kl_weight, steps,
                         gradient)

  def forward(self, data, seed, training, kl_weight, steps, gradient, refine=None):
    """The method's terms and losses for one batch (`savae_tf.methods`), and `tokens`.
    `refine` (default: whether the method refines) forces test-time refinement for a `vae`."""
    batch = self.batch(data, seed, training, kl_weight, steps, gradient)
    out = self.method.forward(self, batch, self.refines if refine is None else refine)
    out["tokens"] = batch.obs.units()
    return out

  def score(self, data, steps, num_samples, refine=None):
    """`savae_tf.scoring.score`: per-example evaluation rows of one batch."""
    return scoring.score(self, data, steps, num_samples, refine)

  def refine_for_evaluation(self, data, mean, logvar, steps):
    """`savae_tf.scoring.refine_for_evaluation`."""
    return scoring.refine_for_evaluation(self, data, mean, logvar, steps)

  # --- Keras' steps. ---

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # A built model reads no batch (on several workers each read is a collective operation);
    # under a strategy, build from one replica's share (`replicas.one_replica_batch`).
    if all(layer.built for layer in self._flatten_layers()) and self.optimizer.built:
      return
    if iterator is not None and self._distribute_strategy is not None:
      data_batch, iterator = replicas.one_replica_batch(self, iterator) or data_batch, None
    super()._maybe_symbolic_build(iterator, data_batch)

  def train_step(self, data):
    step = self.optimizer.iterations
    seed = replicas.training_seed(
        tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0]), step), data)
    with tf.GradientTape() as tape:
      out = self.forward(data, seed, True, self.kl_weight(step), self.svi_config.steps, None)
      # VAE+SVI(+KL): encoder_loss does not depend on the decoder and decoder_loss not on the
      # encoder (lambda_K is refined from a detached lambda_0), so one tape over their sum
      # routes each to its own network. (A persistent tape here held every refinement step's
      # activations: 1637 MiB instead of 60 in bench/step_bench.py at K = 20.)
      objective = out["loss"] + out.get("encoder_loss", 0.0)
      # Scaled for float16 (mixed_float16's LossScaleOptimizer unscales); unchanged otherwise.
      objective = self.optimizer.scale_loss(objective)
    loss = out["loss"]
    tf.debugging.Assert(tf.math.is_finite(loss),
                        ["Training loss is not finite (NaN or Inf) at step", step, ":", loss])
    variables = self.method.trained_variables(self)
    norm_only = self.method.clipped_with(self)
    grads = replicas.clipped_gradients(tape.gradient(objective, variables + norm_only),
                                       self.optimizer, len(variables))
    self.optimizer.apply(grads, variables)
    for name, value in replicas.whole_batch_means(out, list(self.trackers)).items():
      self.trackers[name].update_state(value)
    return replicas.logs({name: tracker.result() for name, tracker in self.trackers.items()})

  def test_step(self, data):
    """Progress of `evaluate`/`fit`'s validation: the running means of the per-example rows.
    Reported numbers (perplexity, MI, active units too) come from `savae_tf.evaluate`."""
    out = self.score(data, self.test_svi_steps, self.eval_num_samples, refine=self.refines)
    names = [name for name in self.eval_trackers if name in out]
    count, *sums = replicas.whole_batch_sums(
        [tf.cast(tf.shape(out["nll_bound"])[0], tf.float32)]
        + [tf.reduce_sum(out[name]) for name in names])
    for name, total in zip(names, sums):
      self.eval_trackers[name].update_state(tf.math.divide_no_nan(total, count),
                                            sample_weight=count)
    return replicas.logs({name: self.eval_trackers[name].result() for name in names})
