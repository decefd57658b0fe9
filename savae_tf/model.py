"""SemiAmortizedVAE: every training variant of Kim et al. (2018) as one keras.Model.

The objective is the per-example negative ELBO,

    f_b(lambda_b, theta) = -log p_theta(x_b | z_b) + beta * KL(q(z; lambda_b) || p(z)),

with z_b = mean_b + exp(logvar_b / 2) * eps_b. The optimizer's losses are its batch means; the
refiner moves each example by its own gradient (`SVIConfig.step_scale`, "per_example") or, the
paper's convention, by lr / batch of it ("batch_mean").

Noise: training draws from one stateless stream per batch (keyed by the optimizer's step, so a
resumed run repeats it); evaluation (`test_step`, `score`, `refine_for_evaluation`, and so every
exported signature) keys every draw by the example's own content (`distributions.ExampleSeeds`)
and refines per example, so an example's numbers do not depend on the batch it is in.

Modes (what each trains, and by which loss):
  autoreg     decoder only, no latent: exact NLL (the LSTM language model).
  vae         encoder and decoder on f(lambda_0), lambda_0 = enc(x).
  svi         no encoder: lambda_0 = 0, K SVI steps (gradient stopped), decoder on f(lambda_K).
  vae_svi     decoder on f(lambda_K) from a detached lambda_0; encoder on f(lambda_0) only (the
              decoder gets no gradient from f(lambda_0)).
  vae_svi_kl  decoder on f(lambda_K); encoder on KL(q(lambda_0) || q(lambda_K)), lambda_K detached.
  savae       everything on f(lambda_K) differentiated through the refinement; the encoder learns
              only through lambda_0.

Batches are dicts: text {"tokens": int32 [batch, time], "lengths": int32 [batch]}; images
{"images": float32 [batch, height, width, 1]}. The decoder's `data_kind` says which it models.
"""

import dataclasses
from typing import NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from savae_tf import distributions
from savae_tf import objectives
from savae_tf import svi

MODES = ("autoreg", "vae", "svi", "vae_svi", "vae_svi_kl", "savae")

# The refiner's default step size per convention. per_example: chosen on the synthetic
# experiment's validation set (RESULTS.md; the text and image binaries choose their own, 0.03
# and 0.02, on their data's); batch_mean: the paper's.
DEFAULT_SVI_LR = {"per_example": 0.003, "batch_mean": 1.0}


@dataclasses.dataclass(frozen=True)
class SVIConfig:
  """The refiner's settings, shared by training and evaluation."""
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

  def per_example_equivalent(self) -> "SVIConfig":
    """The per-example refiner that evaluation uses for a model trained with these settings.

    batch_mean at step lr and clip c with batches of B moves each example by lr / B of its own
    gradient, and its clip over the [B, latent] block binds only where one example's gradient
    norm exceeds c * B: so lr / B and a per-example clip of c * B (equal when no clip binds).
    """
    if self.step_scale == "per_example":
      return self
    return dataclasses.replace(
        self, step_scale="per_example", batch_size=None, lr=self.lr / self.batch_size,
        max_grad_norm=None if self.max_grad_norm is None
        else self.max_grad_norm * self.batch_size)

  def refine(self, loss_fn, mean, logvar, steps=None, gradient=None, inputs=None):
    gradient = gradient or self.gradient
    return svi.refine(loss_fn, mean, logvar, self.steps if steps is None else steps,
                      lr=self.lr, momentum=self.momentum, max_grad_norm=self.max_grad_norm,
                      gradient=gradient, inputs=inputs, step_scale=self.step_scale,
                      keep_steps=self.keep_steps if gradient in svi.SWEPT_MODES else 0)


class Observation(NamedTuple):
  """One batch as the model reads it, for text or images (see `observe`)."""
  encoder_inputs: Tuple[tf.Tensor, ...]  # text: (tokens, lengths); images: (images,)
  decoder_inputs: tf.Tensor  # what `decoder.prepare` takes: tokens or images
  targets: tf.Tensor  # text: tokens[:, 1:]; images: the images
  mask: Optional[tf.Tensor]  # text: which targets are real; images: None (every pixel is)
  content: tf.Tensor  # each example as integers (tokens, pixel levels), which key its noise

  def example_seeds(self, *words) -> distributions.ExampleSeeds:
    """Noise keys of each example's own content (padding excluded), folded with `words`."""
    return distributions.ExampleSeeds.of_content(self.content, self.mask, words)

  def nll(self, logits):
    """-log p(x | z) per example from the decoder's logits: categorical over masked tokens, or
    Bernoulli over every pixel."""
    if self.mask is None:
      return objectives.pixel_nll(logits, self.targets)
    return objectives.token_nll(logits, self.targets, self.mask)

  def units(self):
    """Predicted tokens (text) or pixels (images) per example, [batch] int32."""
    if self.mask is None:
      shape = tf.shape(self.targets)
      return tf.fill(shape[:1], tf.reduce_prod(shape[1:]))
    return tf.reduce_sum(tf.cast(self.mask, tf.int32), -1)

  def tiled(self, samples):
    """The targets (and mask) repeated `samples` times along the batch: sample-major, to match
    a decoder run on `samples` copies of the batch."""
    def tile(x):
      return None if x is None else tf.tile(
          x, tf.concat([[samples], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
    return self._replace(targets=tile(self.targets), mask=tile(self.mask))


def observe(data, kind: str) -> Observation:
  """The `Observation` of a text (`kind="text"`) or image (`kind="images"`) batch."""
  if kind == "images":
    if "images" not in data:
      raise ValueError(f"An image model needs batches {{'images': [batch, height, width, 1]}}; "
                       f"got keys {sorted(data)}.")
    images = data["images"]
    return Observation((images,), images, images, None,
                       tf.cast(tf.round(images * 255.0), tf.int32))
  if "tokens" not in data or "lengths" not in data:
    raise ValueError(f"A text model needs batches {{'tokens', 'lengths'}}; got keys "
                     f"{sorted(data)}.")
  tokens, lengths = data["tokens"], data["lengths"]
  targets = tokens[:, 1:]
  # The targets and their mask: every token but <s>, which is the same in every sentence.
  mask = objectives.target_mask(lengths, tf.shape(targets)[1])
  return Observation((tokens, lengths), tokens, targets, mask, targets)


class SemiAmortizedVAE(keras.Model):
  """Encoder + decoder + refiner, trained by `mode` (see the module docstring)."""

  def __init__(self, decoder, encoder=None, mode: str = "savae", latent_dim: int = 32,
               svi_config: SVIConfig = SVIConfig(), test_svi_steps: Optional[int] = None,
               kl_warmup_steps: int = 0, kl_start: float = 0.1, eval_num_samples: int = 0,
               active_unit_threshold: float = 0.01, seed: int = 3435, **kwargs):
    """
    Args:
      decoder: a layer with `data_kind` ("text" or "images"), `floats_per_target`,
        `prepare(inputs, training, seed)` and `logits(context, z, training, seed)`.
      encoder: a layer `(*Observation.encoder_inputs, training) -> GaussianParams`; required by
        vae, vae_svi, vae_svi_kl and savae, unused by autoreg and svi.
      kl_warmup_steps: batches over which the KL weight beta rises linearly from `kl_start` to 1:
        beta_t = min(1, kl_start + t / kl_warmup_steps) for the t-th batch (1-based), the paper's
        rule with kl_warmup_steps = warmup epochs x batches per epoch. 0: beta = 1 throughout.
        beta weights the KL inside the refinement too; evaluation always uses beta = 1.
      test_svi_steps: K at evaluation (default: the training K).
      eval_num_samples: importance samples for `iw_nll` in `evaluate` (0: skip it).

    `evaluate` reports the per-example means (`nll_bound`, `refined_nll_bound`, `kl`, `iw_nll`)
    and `ppl_bound`/`ppl`; the data-set statistics `mi` and `active_units` need the whole set at
    once and come from `savae_tf.evaluate.evaluate`.
    """
    super().__init__(**kwargs)
    if mode not in MODES:
      raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}.")
    needs_encoder = mode in ("vae", "vae_svi", "vae_svi_kl", "savae")
    if needs_encoder and encoder is None:
      raise ValueError(f"mode {mode!r} needs an encoder.")
    if (mode == "savae" and svi_config.gradient in svi.EXACT_MODES
        and not getattr(decoder, "has_second_order_gradient", True)):
      raise ValueError(
          f"Refine gradient {svi_config.gradient!r} differentiates the decoder's gradient, and "
          "the decoder would run cuDNN's LSTM kernel, which has no second-order gradient. Build "
          "the decoder with use_cudnn=False, or use gradient 'finite_difference'.")
    self.decoder = decoder
    self.encoder = encoder if needs_encoder else None
    self.mode = mode
    self.latent_dim = 0 if mode == "autoreg" else latent_dim
    self.svi_config = svi_config
    self.test_svi_steps = svi_config.steps if test_svi_steps is None else test_svi_steps
    self.kl_warmup_steps = kl_warmup_steps
    self.kl_start = kl_start
    self.eval_num_samples = eval_num_samples
    self.seed = seed
    self.active_unit_threshold = active_unit_threshold
    self.refines = mode in ("svi", "vae_svi", "vae_svi_kl", "savae")
    names = ["loss", "nll_bound", "kl"] + (["refined_nll_bound"] if self.refines else [])
    self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
    self.eval_trackers = {name: keras.metrics.Mean(name=name) for name in
                          ["nll_bound", "kl", "iw_nll"]
                          + (["refined_nll_bound"] if self.refines else [])}
    self.totals = {name: keras.metrics.Sum(name=name) for name in
                   ["bound_total", "iw_total", "tokens"]}
    self.built = True

  def get_config(self):
    serialize = keras.saving.serialize_keras_object
    return {"decoder": serialize(self.decoder),
            "encoder": None if self.encoder is None else serialize(self.encoder),
            "mode": self.mode, "latent_dim": self.latent_dim,
            "svi_config": dataclasses.asdict(self.svi_config),
            "test_svi_steps": self.test_svi_steps, "kl_warmup_steps": self.kl_warmup_steps,
            "kl_start": self.kl_start, "eval_num_samples": self.eval_num_samples,
            "active_unit_threshold": self.active_unit_threshold, "seed": self.seed}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    deserialize = keras.saving.deserialize_keras_object
    config["decoder"] = deserialize(config["decoder"])
    config["encoder"] = config["encoder"] and deserialize(config["encoder"])
    config["svi_config"] = SVIConfig(**config["svi_config"])
    return cls(**config)

  @property
  def metrics(self):
    return (list(self.trackers.values()) + list(self.eval_trackers.values())
            + list(self.totals.values()))

  # --- The objective. ---

  def kl_weight(self, step):
    """beta for the 0-based training batch `step`."""
    if not self.kl_warmup_steps:
      return tf.constant(1.0)
    t = tf.cast(step + 1, tf.float32)
    return tf.minimum(1.0, self.kl_start + t / float(self.kl_warmup_steps))

  def observe(self, data) -> Observation:
    return observe(data, self.decoder.data_kind)

  def negative_elbo_terms(self, context, obs, mean, logvar, seed, training):
    """(-log p(x | z), KL) per example at lambda = (mean, logvar), one z drawn from `seed`
    (dropout masks too, when training)."""
    z_seed, dropout_seed = distributions.split(seed, 2)
    z = distributions.sample(mean, logvar, z_seed)
    logits = self.decoder.logits(context, z, training=training,
                                 seed=dropout_seed if training else None)
    return obs.nll(logits), distributions.kl_to_prior(mean, logvar)

  def initial_params(self, obs: Observation, training=False):
    """lambda_0: the encoder's (mean, logvar), or the prior's (zeros) without an encoder."""
    if self.encoder is not None:
      return self.encoder(*obs.encoder_inputs, training=training)
    zeros = tf.zeros([tf.shape(obs.targets)[0], self.latent_dim])
    return distributions.GaussianParams(zeros, zeros)

  @staticmethod
  def split_seed(seed):
    """(seed for lambda_0's z, for lambda_K's z, for the refinement steps)."""
    return distributions.split(seed, 3)

  def refine_posterior(self, context, obs, mean0, logvar0, steps, gradient, seed, training,
                       kl_weight):
    """lambda_K: `steps` SVI steps on f from lambda_0; step k's z and dropout from seed and k.

    Training refines with `svi_config`; evaluation with its per-example equivalent, so that no
    example's refinement depends on its batch.
    """
    config = self.svi_config if training else self.svi_config.per_example_equivalent()

    def loss_fn(mean, logvar, step, inputs):
      nll, kl = self.negative_elbo_terms(inputs[0], obs, mean, logvar,
                                         distributions.step_seed(seed, step), training)
      return nll + kl_weight * kl

    # The decoder's z-independent work (`context`) is computed once and handed to the refiner
    # as an input, so the reverse sweep returns its gradient too.
    return config.refine(loss_fn, mean0, logvar0, steps, gradient, inputs=[context])

  def forward(self, data, seed, training, kl_weight, steps, gradient, refine=None):
    """Everything one batch needs: a dict of per-example terms and the losses to minimise.

    `refine` (default: whether the mode refines) forces test-time refinement for a `vae`.
    """
    refine = self.refines if refine is None else refine
    obs = self.observe(data)
    # The decoder's z-independent work (and its dropout masks) once per batch, shared by lambda_0's,
    # every refinement step's and lambda_K's loss.
    context = self.decoder.prepare(obs.decoder_inputs, training=training,
                                   seed=distributions.fold_in(seed, 3) if training else None)
    out = {"tokens": obs.units()}
    seed_0, seed_k, seed_refine = self.split_seed(seed)
    # Over the whole batch, across tf.distribute replicas: the replicas' gradients, which the
    # optimizer sums, then add up to the gradient of the whole batch's mean.
    batch = svi.global_batch_size(tf.shape(obs.targets)[0])

    def batch_mean(values):
      return tf.reduce_sum(values) / batch

    if self.mode == "autoreg":
      logits = self.decoder.logits(context, None, training=training,
                                   seed=seed_0 if training else None)
      out["nll"] = obs.nll(logits)
      out["nll_bound"] = out["nll"]
      out["kl"] = tf.zeros_like(out["nll"])
      out["loss"] = batch_mean(out["nll"])
      return out

    mean0, logvar0 = self.initial_params(obs, training)
    out["mean0"], out["logvar0"] = mean0, logvar0
    if self.mode != "svi":
      with tf.GradientTape(watch_accessed_variables=False) as lambda_tape:
        lambda_tape.watch([mean0, logvar0])
        nll0, kl0 = self.negative_elbo_terms(context, obs, mean0, logvar0, seed_0, training)
        out["amortized_loss"] = batch_mean(nll0 + kl_weight * kl0)
      out["nll_bound"], out["kl"] = nll0 + kl0, kl0
      out["loss"] = out["amortized_loss"]
    if not refine:
      return out

    if self.mode == "savae":
      mean_k, logvar_k = self.refine_posterior(context, obs, mean0, logvar0, steps, gradient,
                                               seed_refine, training, kl_weight)
    else:
      mean_k, logvar_k = self.refine_posterior(
          context, obs, tf.stop_gradient(mean0), tf.stop_gradient(logvar0), steps, "none",
          seed_refine, training, kl_weight)
    nll_k, kl_k = self.negative_elbo_terms(context, obs, mean_k, logvar_k, seed_k, training)
    out["refined_nll_bound"], out["kl"] = nll_k + kl_k, kl_k
    out["mean"], out["logvar"] = mean_k, logvar_k
    out["decoder_loss"] = batch_mean(nll_k + kl_weight * kl_k)
    if self.mode == "svi":
      out["nll_bound"] = out["refined_nll_bound"]
    if self.mode == "vae_svi_kl":
      q0 = distributions.posterior(mean0, logvar0)
      q_k = distributions.posterior(tf.stop_gradient(mean_k), tf.stop_gradient(logvar_k))
      out["encoder_loss"] = batch_mean(distributions.tfd.kl_divergence(q0, q_k))
    elif self.mode == "vae_svi":
      # d f(lambda_0) / d lambda_0 pushed into the encoder alone: a surrogate whose gradient with
      # respect to the encoder is exactly that, and which the decoder does not appear in.
      g_mean, g_logvar = lambda_tape.gradient(out["amortized_loss"], [mean0, logvar0])
      out["encoder_loss"] = (tf.reduce_sum(tf.stop_gradient(g_mean) * mean0)
                             + tf.reduce_sum(tf.stop_gradient(g_logvar) * logvar0))
    out["loss"] = out["decoder_loss"]
    return out

  # --- Keras hooks. ---

  def train_step(self, data):
    step = self.optimizer.iterations
    seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0]), step)
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:  # independent noise per replica
      seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
    with tf.GradientTape() as tape:
      out = self.forward(data, seed, True, self.kl_weight(step), self.svi_config.steps, None)
      # VAE+SVI(+KL): encoder_loss does not depend on the decoder and decoder_loss not on the
      # encoder (lambda_K is refined from a detached lambda_0), so one tape over their sum
      # routes each to its own network. (A persistent tape here held every refinement step's
      # activations: 1637 MiB instead of 60 in bench/step_bench.py at K = 20.)
      objective = out["loss"] + out.get("encoder_loss", 0.0)
      # Scaled for float16 (mixed_float16 wraps the optimizer in a LossScaleOptimizer, whose
      # apply unscales); unchanged otherwise.
      objective = self.optimizer.scale_loss(objective)
    loss = out["loss"]
    tf.debugging.Assert(tf.math.is_finite(loss),
                        ["Training loss is not finite (NaN or Inf) at step", step, ":", loss])
    variables = self.trainable_variables
    grads = tape.gradient(objective, variables)
    replica = tf.distribute.get_replica_context()
    clip = getattr(self.optimizer, "inner_optimizer", self.optimizer).global_clipnorm
    if clip and replica is not None and replica.num_replicas_in_sync > 1:
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        clip = clip * self.optimizer.dynamic_scale  # the gradients are still scaled
      # Keras clips each replica's share before summing them; the paper clips the whole batch's
      # gradient. Clip the sum here; each share is then at most clip / replicas, so the
      # optimizer's own clip never binds.
      replicas = replica.num_replicas_in_sync
      grads = replica.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      grads = [tf.math.scalar_mul(1.0 / replicas, g)
               for g in tf.clip_by_global_norm(grads, clip)[0]]
    self.optimizer.apply(grads, variables)
    # `loss` is this replica's share of the whole batch's mean; the metric averages replicas.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    for name, tracker in self.trackers.items():
      tracker.update_state(out[name] * replicas if name == "loss" else tf.reduce_mean(out[name]))
    return {name: tracker.result() for name, tracker in self.trackers.items()}

  def test_step(self, data):
    out = self.score(data, self.test_svi_steps, self.eval_num_samples, refine=self.refines)
    for name, tracker in self.eval_trackers.items():
      if name in out:
        tracker.update_state(out[name])
    self.totals["bound_total"].update_state(tf.reduce_sum(out["refined_nll_bound"]))
    self.totals["tokens"].update_state(tf.reduce_sum(out["tokens"]))
    if "iw_nll" in out:
      self.totals["iw_total"].update_state(tf.reduce_sum(out["iw_nll"]))
    return self.evaluation_results()

  def iw_nll(self, data, out, num_samples):
    """-log p(x) per example by importance sampling, proposal q at the refined lambda."""
    if self.mode == "autoreg":
      return out["nll"]
    obs = self.observe(data)
    context = self.decoder.prepare(obs.decoder_inputs, training=False)
    mean, logvar = out.get("mean", out["mean0"]), out.get("logvar", out["logvar0"])

    def log_likelihood(z):  # z [S, B, D] -> [S, B]
      samples, batch = tf.shape(z)[0], tf.shape(z)[1]
      tiled = tf.tile(context, tf.concat([[samples], tf.ones([tf.rank(context) - 1], tf.int32)],
                                         0))
      logits = self.decoder.logits(tiled, tf.reshape(z, [samples * batch, -1]), training=False)
      return -tf.reshape(obs.tiled(samples).nll(logits), [samples, batch])

    return -objectives.iw_log_likelihood(log_likelihood, mean, logvar, num_samples,
                                         self.evaluation_seed(obs, 3),
                                         self._iw_chunk_size(obs.targets))

  def _iw_chunk_size(self, targets, max_floats: int = 2**25, max_chunk: int = 50):
    """Samples per importance-sampling chunk: at most `max_chunk`, and few enough that one
    chunk's decoder outputs (chunk x targets x `decoder.floats_per_target` floats: the logits of
    a text decoder) stay under `max_floats` (128 MiB), so a batch of 1,000 sentences does not
    run out of memory. (Samples are keyed by their number, so the chunking changes no draw.)"""
    per_sample = tf.size(targets, out_type=tf.int64) * self.decoder.floats_per_target
    return tf.cast(tf.clip_by_value(max_floats // tf.maximum(per_sample, 1), 1, max_chunk),
                   tf.int32)

  def score(self, data, steps, num_samples, refine=None):
    """Per-example evaluation of one batch: each row depends on that example alone.

    Returns the forward dict with `nll_bound` (amortized), `refined_nll_bound` (after `steps`
    test-time SVI steps; with `refine` None every mode with a latent refines here, a VAE too),
    `kl` (at the refined posterior), `mean`, `logvar` (the refined posterior), `z` (one draw from
    it, for the mutual information), `iw_nll` (`num_samples` importance samples, proposal q at
    the refined posterior; skipped when `num_samples` is the Python int 0) and `tokens`
    (predicted tokens, or pixels, per example). The autoregressive baseline's three NLLs are its
    exact NLL.
    """
    obs = self.observe(data)
    refine = self.latent_dim > 0 if refine is None else refine
    out = self.forward(data, self.evaluation_seed(obs, 1), False, tf.constant(1.0), steps,
                       "none", refine=refine)
    out.setdefault("refined_nll_bound", out["nll_bound"])
    if self.latent_dim:
      out.setdefault("mean", out["mean0"])
      out.setdefault("logvar", out["logvar0"])
      out["z"] = distributions.sample(out["mean"], out["logvar"], self.evaluation_seed(obs, 2))
    if not (isinstance(num_samples, int) and num_samples == 0):
      out["iw_nll"] = self.iw_nll(data, out, num_samples)
    return out

  def refine_for_evaluation(self, data, mean, logvar, steps):
    """lambda_K from a given lambda_0, with the noise `score` uses for these examples."""
    if not self.latent_dim:
      return distributions.GaussianParams(mean, logvar)
    obs = self.observe(data)
    seed_refine = self.split_seed(self.evaluation_seed(obs, 1))[2]
    return self.refine_posterior(self.decoder.prepare(obs.decoder_inputs), obs, mean, logvar,
                                 steps, "none", seed_refine, False, tf.constant(1.0))

  def evaluation_seed(self, obs: Observation, purpose: int) -> distributions.ExampleSeeds:
    """Noise keys of each example's content (not its batch or position), so an example's
    evaluation is the same in any batch, and Monte Carlo noise still differs between examples."""
    return obs.example_seeds(self.seed, purpose)

  def evaluation_results(self):
    skipped = {"iw_nll"} if not self.eval_num_samples else set()
    results = {name: tracker.result() for name, tracker in self.eval_trackers.items()
               if name not in skipped}
    if self.decoder.data_kind == "text":  # perplexity is per token; images report nats
      tokens = tf.maximum(self.totals["tokens"].result(), 1.0)
      results["ppl_bound"] = tf.exp(self.totals["bound_total"].result() / tokens)
      if self.mode == "autoreg":
        results["ppl"] = results["ppl_bound"]
      elif self.eval_num_samples:
        results["ppl"] = tf.exp(self.totals["iw_total"].result() / tokens)
    return results
