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

Modes are the training methods of `savae_tf.methods` (what each trains, by which loss; one class
each): autoreg, vae, svi, vae_svi, vae_svi_kl, savae. The KL weight schedule
(`savae_tf.schedules`), free bits and the refiner's settings compose with any of them.

Batches are dicts: text {"tokens": int32 [batch, time], "lengths": int32 [batch]}; images
{"images": float32 [batch, height, width, 1]}. The decoder's `data_kind` says which it models.
"""

import dataclasses
from typing import NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from savae_tf import cluster
from savae_tf import distributions
from savae_tf import methods
from savae_tf import objectives
from savae_tf import schedules
from savae_tf import svi

MODES = tuple(methods.METHODS)

# The refiner's default step size per convention. per_example: chosen on the synthetic
# experiment's validation set (RESULTS.md; the text and image binaries choose their own, 0.03
# and 0.02, on their data's); batch_mean: the paper's.
DEFAULT_SVI_LR = {"per_example": 0.003, "batch_mean": 1.0}


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


def _replicas():
  """(replica context, number of replicas in sync); the context is None outside a replica."""
  context = tf.distribute.get_replica_context()
  return context, 1 if context is None else context.num_replicas_in_sync


def _whole_batch_means(out, names):
  """Each of `names` as the whole batch's mean over every replica, the same on each: `loss` is
  already this replica's share of it; the others are per-example values. Exact however unevenly
  the batch was split, also for a replica that got no example."""
  context, replicas = _replicas()
  if replicas == 1:
    return {name: out[name] if name == "loss" else tf.reduce_mean(out[name]) for name in names}
  size = svi.global_batch_size(tf.shape(out["nll_bound"])[0])
  shares = [out[name] if name == "loss" else tf.reduce_sum(out[name]) / size for name in names]
  return dict(zip(names, context.all_reduce(tf.distribute.ReduceOp.SUM, shares)))


def _whole_batch_sums(values):
  """Sums over every replica (the same on each) of the tensors in `values`."""
  context, replicas = _replicas()
  return values if replicas == 1 else context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _logs(results):
  """Keras 3 reduces each log of a multi-worker step with MEAN over axis 0, which a scalar lacks
  (tensorflow/tensorflow#72388); the logs are equal on every replica, so a length-1 axis changes
  no value."""
  if cluster.in_cluster():
    return {name: value[None] for name, value in results.items()}
  return results


@keras.saving.register_keras_serializable(package="savae_tf")
class SemiAmortizedVAE(keras.Model):
  """Encoder + decoder + refiner, trained by `mode` (see the module docstring).

  Keras' own format: `model.save("m.keras")`, then `keras.saving.load_model("m.keras")` after
  `import savae_tf` (which registers the classes the file names), gives back the networks'
  weights (BatchNorm statistics too) and every setting of `get_config`. A model compiled before
  saving is saved with its optimizer, configuration and state (iteration, moments), and loads
  compiled: `evaluate` runs at once and `fit` continues as the saved model would have (the
  training noise is keyed by the optimizer's iteration). An uncompiled one loads uncompiled and
  needs `compile()` first. Not in the file: the run state that `savae_tf.training.train` keeps in
  its checkpoints (epoch, best validation value, whether the learning rate decays, the aggressive
  method's phase and encoder optimizer). The binaries save with `savae_tf.runs` instead
  (config.json, vocabulary, a checkpoint of the networks), which their other tools read.
  """

  def __init__(self, decoder, encoder=None, mode: str = "savae", latent_dim: int = 32,
               svi_config: SVIConfig = SVIConfig(), test_svi_steps: Optional[int] = None,
               kl_schedule=schedules.Constant(), free_bits: float = 0.0,
               pretrain_steps: int = 0, eval_num_samples: int = 0,
               active_unit_threshold: float = 0.01, seed: int = 3435,
               generation_length: Optional[int] = None, **kwargs):
    """
    Args:
      decoder: a layer with `data_kind` ("text" or "images"), `floats_per_target`,
        `prepare(inputs, training, seed)` and `logits(context, z, training, seed)`.
      encoder: a layer `(*Observation.encoder_inputs, training) -> GaussianParams`; required by
        vae, vae_svi, vae_svi_kl and savae, unused by autoreg and svi.
      kl_schedule: beta, the KL weight, per training batch (`savae_tf.schedules`; default 1).
        beta weights the KL inside the refinement too; evaluation always uses beta = 1.
      free_bits: lambda (nats) of free bits (Kingma et al. 2016, per dimension as Li et al. 2019):
        the training objective's KL is sum_d max(lambda, KL_d), KL_d the batch mean of latent
        dimension d's KL, so dimensions under lambda get no KL gradient. The training objective
        only: the refiner's steps and every reported bound use the true KL. 0: off.
      pretrain_steps: autoencoder pretraining (Li et al. 2019): beta = 0 for the first
        `pretrain_steps` batches, then `kl_schedule` counted from there; the training loop
        (`savae_tf.training.train`) gives the decoder fresh weights when they end
        (`reinitialize_decoder`) and keeps the encoder.
      test_svi_steps: K at evaluation (default: the training K).
      eval_num_samples: importance samples for `iw_nll` in `evaluate` (0: skip it).
      generation_length: the longest training sequence, in tokens after the start token (text):
        how many tokens generation draws unless told (`savae_tf.export`); a vocabulary without
        `</s>` never stops earlier. None: not recorded.

    `evaluate` reports the per-example means (`nll_bound`, `refined_nll_bound`, `kl`, `iw_nll`)
    and `ppl_bound`/`ppl`; the data-set statistics `mi` and `active_units` need the whole set at
    once and come from `savae_tf.evaluate.evaluate`.
    """
    super().__init__(**kwargs)
    self.method = methods.get(mode)
    if self.method.uses_encoder and encoder is None:
      raise ValueError(f"mode {mode!r} needs an encoder.")
    if free_bits < 0:
      raise ValueError(f"free_bits must be >= 0 nats; got {free_bits}.")
    if pretrain_steps < 0 or (pretrain_steps and not self.method.uses_encoder):
      raise ValueError(f"pretrain_steps must be >= 0, and only a method with an encoder "
                       f"pretrains one; got {pretrain_steps} with {mode!r}.")
    if (self.method.differentiates_refinement and svi_config.gradient in svi.EXACT_MODES
        and not getattr(decoder, "has_second_order_gradient", True)):
      raise ValueError(
          f"Refine gradient {svi_config.gradient!r} differentiates the decoder's gradient, and "
          "the decoder would run cuDNN's LSTM kernel, which has no second-order gradient. Build "
          "the decoder with use_cudnn=False, or use gradient 'finite_difference'.")
    self.decoder = decoder
    self.encoder = encoder if self.method.uses_encoder else None
    self.mode = mode
    self.latent_dim = latent_dim if self.method.uses_latent else 0
    self.svi_config = svi_config
    self.test_svi_steps = svi_config.steps if test_svi_steps is None else test_svi_steps
    self.kl_schedule = kl_schedule
    self.free_bits = free_bits
    self.pretrain_steps = pretrain_steps
    self.eval_num_samples = eval_num_samples
    self.seed = seed
    self.active_unit_threshold = active_unit_threshold
    self.generation_length = generation_length
    self.refines = self.method.refines
    names = ["loss", "nll_bound", "kl"] + (["refined_nll_bound"] if self.refines else [])
    self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
    self.eval_trackers = {name: keras.metrics.Mean(name=name) for name in
                          ["nll_bound", "kl", "iw_nll"]
                          + (["refined_nll_bound"] if self.refines else [])}
    self.totals = {name: keras.metrics.Sum(name=name) for name in
                   ["bound_total", "iw_total", "tokens"]}
    self.built = True

  def get_config(self):
    # The refiner's and the schedule's configs are inlined, as config.json (`savae_tf.runs`) has
    # always stored them.
    serialize = keras.saving.serialize_keras_object
    return {"decoder": serialize(self.decoder),
            "encoder": None if self.encoder is None else serialize(self.encoder),
            "mode": self.mode, "latent_dim": self.latent_dim,
            "svi_config": self.svi_config.get_config(),
            "test_svi_steps": self.test_svi_steps,
            "kl_schedule": self.kl_schedule.get_config(), "free_bits": self.free_bits,
            "pretrain_steps": self.pretrain_steps,
            "eval_num_samples": self.eval_num_samples,
            "active_unit_threshold": self.active_unit_threshold, "seed": self.seed,
            "generation_length": self.generation_length}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    deserialize = keras.saving.deserialize_keras_object
    config["decoder"] = deserialize(config["decoder"])
    config["encoder"] = config["encoder"] and deserialize(config["encoder"])
    config["svi_config"] = SVIConfig.from_config(config["svi_config"])
    if "kl_warmup_steps" in config:  # saved before schedules: a linear warm-up, or none
      warmup, start = config.pop("kl_warmup_steps"), config.pop("kl_start", 0.1)
      config["kl_schedule"] = (schedules.Linear(warmup, start) if warmup
                               else schedules.Constant())
    if isinstance(config.get("kl_schedule"), dict):
      config["kl_schedule"] = schedules.from_config(config["kl_schedule"])
    return cls(**config)

  def _resolve_auto_jit_compile(self):
    # `compile(jit_compile="auto")`, Keras' default, means no XLA here: Keras would turn it on
    # wherever a GPU is present and every layer allows it (the image models), compiling a whole
    # step of nested tapes, while loops and custom gradients by a path never measured, whose
    # `Assert`s (the NaN stop) XLA drops, recompiled for every new batch shape.
    # `compile(jit_compile=True)` still asks for it. (Overriding `compile` itself would make
    # Keras skip compiling a loaded .keras model.)
    return False

  @property
  def metrics(self):
    return (list(self.trackers.values()) + list(self.eval_trackers.values())
            + list(self.totals.values()))

  # --- The objective. ---

  def kl_weight(self, step):
    """beta at the 0-based training batch `step`: 0 while the autoencoder pretrains, then the
    schedule's, counted from the end of pretraining."""
    if not self.pretrain_steps:
      return self.kl_schedule(step)
    after = tf.cast(step, tf.int64) - self.pretrain_steps
    return tf.where(after < 0, 0.0, self.kl_schedule(tf.maximum(after, 0)))

  def reinitialize_decoder(self, data, seed: int):
    """Fresh initial weights for the decoder (drawn from `seed`), as a newly built one of the same
    configuration gets; the encoder keeps its own. `data`: any batch, to build the new one."""
    keras.utils.set_random_seed(seed)
    fresh = self.decoder.__class__.from_config(self.decoder.get_config())
    obs = self.observe(data)
    z = tf.zeros([tf.shape(obs.targets)[0], self.latent_dim]) if self.latent_dim else None
    fresh.logits(fresh.prepare(obs.decoder_inputs), z)
    self.decoder.set_weights(fresh.get_weights())

  def observe(self, data) -> Observation:
    return observe(data, self.decoder.data_kind)

  def posterior_terms(self, batch: methods.Batch, mean, logvar, seed,
                      watch=False) -> PosteriorTerms:
    """f's terms at lambda = (mean, logvar), one z from `seed`; with `watch`, recorded for
    `PosteriorTerms.lambda_gradient`."""
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

  def refine_posterior(self, batch: methods.Batch, mean0, logvar0, gradient):
    """lambda_K: K SVI steps on f from lambda_0 (gradient mode `gradient`, None: the config's);
    step k's z and dropout from the batch's refinement seed and k.

    Training refines with `svi_config`; evaluation with its per-example equivalent, so that no
    example's refinement depends on its batch.
    """
    config = self.svi_config if batch.training else self.svi_config.per_example_equivalent()

    def loss_fn(mean, logvar, step, inputs):
      nll, kl = self.negative_elbo_terms(inputs[0], batch.obs, mean, logvar,
                                         distributions.step_seed(batch.seed_refine, step),
                                         batch.training)
      return nll + batch.kl_weight * kl

    # The decoder's z-independent work (`context`) is computed once and handed to the refiner
    # as an input, so the reverse sweep returns its gradient too.
    return config.refine(loss_fn, mean0, logvar0, batch.steps, gradient,
                         inputs=[batch.context])

  def forward(self, data, seed, training, kl_weight, steps, gradient, refine=None):
    """The method's terms and losses for one batch (`savae_tf.methods`), and `tokens`.

    `refine` (default: whether the method refines) forces test-time refinement for a `vae`.
    """
    batch = self.batch(data, seed, training, kl_weight, steps, gradient)
    out = self.method.forward(self, batch, self.refines if refine is None else refine)
    out["tokens"] = batch.obs.units()
    return out

  def batch(self, data, seed, training, kl_weight, steps, gradient) -> methods.Batch:
    obs = self.observe(data)
    # The decoder's z-independent work (and its dropout masks) once per batch, shared by
    # lambda_0's, every refinement step's and lambda_K's terms.
    context = self.decoder.prepare(obs.decoder_inputs, training=training,
                                   seed=distributions.fold_in(seed, 3) if training else None)
    return methods.Batch(obs, context, *self.split_seed(seed), training, kl_weight, steps,
                         gradient)

  # --- Keras hooks. ---

  def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    # Under a distribution strategy Keras builds from the first batch averaged over replicas,
    # which MultiWorkerMirroredStrategy cannot do for a dict of inputs; one replica's share has
    # the shapes and dtypes that building needs. A built model reads no batch: on several
    # workers each read is a collective operation.
    if all(layer.built for layer in self._flatten_layers()) and self.optimizer.built:
      return
    if iterator is not None and self._distribute_strategy is not None:
      for _, _, batches in iterator:
        data_batch = tf.nest.map_structure(
            lambda v: self.distribute_strategy.experimental_local_results(v)[0], next(batches))
        break
      iterator = None
    super()._maybe_symbolic_build(iterator, data_batch)

  def train_step(self, data):
    step = self.optimizer.iterations
    seed = tf.random.experimental.stateless_fold_in(tf.constant([self.seed, 0]), step)
    replica, replicas = _replicas()
    if replicas > 1:
      if "rows" in data:  # each example's noise as on one device (the corpora's datasets)
        total = tf.cast(svi.global_batch_size(tf.shape(data["rows"])[0]), tf.int32)
        seed = distributions.BatchRows(seed, data["rows"], total)
      else:  # batches without positions: independent noise per replica
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
    variables = self.method.trained_variables(self)
    grads = tape.gradient(objective, variables)
    clip = getattr(self.optimizer, "inner_optimizer", self.optimizer).global_clipnorm
    if clip and replicas > 1:
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        clip = clip * self.optimizer.dynamic_scale  # the gradients are still scaled
      # Keras clips each replica's share before summing them; the paper clips the whole batch's
      # gradient. Clip the sum here; each share is then at most clip / replicas, so the
      # optimizer's own clip never binds.
      grads = replica.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      grads = [tf.math.scalar_mul(1.0 / replicas, g)
               for g in tf.clip_by_global_norm(grads, clip)[0]]
    self.optimizer.apply(grads, variables)
    for name, value in _whole_batch_means(out, list(self.trackers)).items():
      self.trackers[name].update_state(value)
    return _logs({name: tracker.result() for name, tracker in self.trackers.items()})

  def test_step(self, data):
    out = self.score(data, self.test_svi_steps, self.eval_num_samples, refine=self.refines)
    _, replicas = _replicas()
    names = [name for name in self.eval_trackers if name in out]
    if replicas == 1:
      for name in names:
        self.eval_trackers[name].update_state(out[name])
    else:  # every replica's trackers take the whole batch's sums
      count, *sums = _whole_batch_sums(
          [tf.cast(tf.shape(out["nll_bound"])[0], tf.float32)]
          + [tf.reduce_sum(out[name]) for name in names])
      for name, total in zip(names, sums):
        self.eval_trackers[name].update_state(tf.math.divide_no_nan(total, count),
                                              sample_weight=count)
    totals = {"bound_total": "refined_nll_bound", "tokens": "tokens", "iw_total": "iw_nll"}
    totals = {name: key for name, key in totals.items() if key in out}
    sums = _whole_batch_sums([tf.cast(tf.reduce_sum(out[key]), tf.float32)
                              for key in totals.values()])
    for name, total in zip(totals, sums):
      self.totals[name].update_state(total)
    return _logs(self.evaluation_results())

  def iw_nll(self, data, out, num_samples):
    """-log p(x) per example by importance sampling, proposal q at the refined lambda."""
    if not self.method.uses_latent:
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
    it, for the refined mutual information), `mean0`, `logvar0`, `z0` (the same of the encoder's
    posterior lambda_0, for He et al.'s mutual information and active units), `iw_nll` (`num_samples` importance samples, proposal q at
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
      out["z0"] = distributions.sample(out["mean0"], out["logvar0"], self.evaluation_seed(obs, 4))
    if not (isinstance(num_samples, int) and num_samples == 0):
      out["iw_nll"] = self.iw_nll(data, out, num_samples)
    return out

  def refine_for_evaluation(self, data, mean, logvar, steps):
    """lambda_K from a given lambda_0, with the noise `score` uses for these examples."""
    if not self.latent_dim:
      return distributions.GaussianParams(mean, logvar)
    batch = self.batch(data, self.evaluation_seed(self.observe(data), 1), False,
                       tf.constant(1.0), steps, "none")
    return self.refine_posterior(batch, mean, logvar, "none")

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
      if not self.method.uses_latent:
        results["ppl"] = results["ppl_bound"]
      elif self.eval_num_samples:
        results["ppl"] = tf.exp(self.totals["iw_total"].result() / tokens)
    return results
