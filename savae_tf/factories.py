"""Factories: the objects a binary's flags describe (model, optimizer, refiner settings, KL
schedule, distribution strategy, run directory). `savae_tf.flags` defines the flags; this module
reads them.
"""

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

from absl import app
from absl import flags
import keras
import tensorflow as tf

from savae_tf import cluster
from savae_tf import console
from savae_tf import devices
from savae_tf import domains
from savae_tf import gaps
from savae_tf import methods
from savae_tf import refiners
from savae_tf import runs
from savae_tf import schedules
from savae_tf import flags as savae_flags
from savae_tf.flags import RESUMABLE_CHANGES
from savae_tf.model import SemiAmortizedVAE
from savae_tf.refiners import DEFAULT_SVI_LR, SVIConfig


def flag_values(flag_values, modules) -> Dict[str, Any]:
  """{name: value} of the flags the given modules define (what a run was asked to do)."""
  return {flag.name: flag.value for module in modules
          for flag in flag_values.get_flags_for_module(module)
          if type(flag).__name__ != "_FlagAlias"}  # --model is --method's other name


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, learning_rate: float, max_grad_norm: float):
  """SGD (the paper's text recipe) or Adam (its image recipe, eps 1e-8 as in PyTorch), with a
  global-norm clip over all parameters when max_grad_norm > 0."""
  clip = max_grad_norm if max_grad_norm > 0 else None
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, global_clipnorm=clip)
  if name == "adam":
    return keras.optimizers.Adam(learning_rate, epsilon=1e-8, global_clipnorm=clip)
  raise ValueError(f"Unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")


def refinement_memory(model, batch) -> Tuple[int, int]:
  """(base, per step): the bytes one training gradient of `model` on `batch` needs when its
  refinement is unrolled, apart from the K steps' activations, and per step of them. Measured
  (`devices.PeakMemory`) at K = 0 and K = 1, so whatever the networks are, and on the device that
  trains; the model's state (BatchNorm's moving statistics) is left as it was."""
  state = [v.numpy() for v in model.non_trainable_variables]
  config = model.svi_config
  model.svi_config = dataclasses.replace(config, gradient="unrolled", keep_steps=0)
  data = {name: tf.constant(value) for name, value in batch.items()}

  def gradient_fn(steps):
    def replica_gradient():
      with tf.GradientTape() as tape:
        out = model.forward(data, tf.constant([model.seed, 0]), True, tf.constant(1.0), steps,
                            None)
        objective = out["loss"] + out.get("encoder_loss", 0.0)
      return tape.gradient(objective, model.trainable_variables)
    # Each replica takes the whole batch: an upper bound for its share.
    return tf.function(lambda: tf.distribute.get_strategy().run(replica_gradient),
                       autograph=False)

  try:
    with devices.PeakMemory() as memory:
      none, one = (memory.measure(gradient_fn(steps)) for steps in (0, 1))
  finally:
    model.svi_config = config
    for variable, value in zip(model.non_trainable_variables, state):
      variable.assign(value)
  return none, max(one - none, 0)


def choose_refine_gradient(model, batch, memory_fraction: float) -> devices.GradientChoice:
  """Gradient mode "auto": sets `model.svi_config`'s gradient and keep_steps to
  `devices.choose_refine_gradient`'s for its K, measured on `batch` (the largest a run trains
  on), within `memory_fraction` of the device's free memory; returns the choice."""
  base, step = refinement_memory(model, batch)
  choice = devices.choose_refine_gradient(model.svi_config.steps, base, step,
                                          devices.memory_budget(memory_fraction))
  model.svi_config = dataclasses.replace(model.svi_config, gradient=choice.gradient,
                                         keep_steps=choice.keep_steps)
  return choice



STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
  """TensorFlow's own distribution: `default` (one device), `mirrored` (every local GPU, or the
  local logical devices), `multi_worker` (the cluster in TF_CONFIG). Build and compile the model
  inside `strategy.scope()`; Keras' fit then splits each batch across the replicas."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG variable.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")


def claim(model_dir: str, defining: Dict[str, Any], overwrite: bool = False,
          chief: bool = True):
  """`runs.claim_run_directory`, a refusal as a usage error. A flag added since a run began is
  taken at its default for that run."""
  defaults = {name: flags.FLAGS[name].default for name in defining if name in flags.FLAGS}
  try:
    runs.claim_run_directory(model_dir, defining, overwrite, write=chief, defaults=defaults)
  except runs.RunDirectoryError as error:
    raise app.UsageError(str(error)) from None


def claim_run_directory(modules, strategy):
  """`runs.claim_run_directory` for --model_dir with the defining flags of `modules` (the binary
  and this one), and --export_dir checked writable: call it before loading data, outside the
  strategy's scope (`strategy` says which worker writes run.json). Any refusal is a usage error."""
  f = flags.FLAGS
  defining = {name: value for name, value in flag_values(f, modules).items()
              if name not in RESUMABLE_CHANGES}
  with strategy.scope():
    chief = cluster.is_chief()
  claim(f.model_dir, defining, f.overwrite, chief)
  if f.export_dir:
    try:
      runs.ensure_writable(f.export_dir, "--export_dir")
    except runs.RunDirectoryError as error:
      raise app.UsageError(str(error)) from None


def strategy():
  """The --strategy, made first thing in a binary's main: a multi-worker strategy must exist
  before TensorFlow runs anything (it configures its collectives at startup)."""
  try:
    with console.start_up_logs_hidden():  # a cluster's start-up logs a line per device
      return make_strategy(flags.FLAGS.strategy)
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def set_precision_policy():
  """Makes --mixed_precision the global Keras dtype policy; call it before building networks
  (they keep their policy in their configs, so a reloaded model computes as it trained)."""
  keras.mixed_precision.set_dtype_policy(flags.FLAGS.mixed_precision)


def svi_max_grad_norm(value: float):
  """The clip as `refine` takes it: None when disabled."""
  return value if value > 0 else None


def svi_lr(mode: Optional[str] = None, domain: Optional[str] = None) -> float:
  """--svi_lr, or the default for `mode` on `domain`'s data (`refiners.default_lr`); without
  them, --svi_step_scale's default for a refiner on its own."""
  f = flags.FLAGS
  if f.svi_lr is not None:
    return f.svi_lr
  if mode is None or domain is None:
    return DEFAULT_SVI_LR[f.svi_step_scale]
  return refiners.default_lr(methods.METHODS[mode], domains.get(domain), f.svi_step_scale)


def svi_settings(mode: Optional[str] = None, domain: Optional[str] = None) -> Dict[str, Any]:
  """The refiner's keyword arguments of `savae_tf.refine` from the flags (the step `svi_lr`'s)."""
  f = flags.FLAGS
  return dict(lr=svi_lr(mode, domain), momentum=f.momentum,
              max_grad_norm=svi_max_grad_norm(f.svi_max_grad_norm), step_scale=f.svi_step_scale)


def gap_config() -> Optional[gaps.GapConfig]:
  """The gap decomposition's settings from --gap_*, or None without --gaps."""
  f = flags.FLAGS
  if not f.gaps:
    return None
  return gaps.GapConfig(max_steps=f.gap_max_steps, tolerance=f.gap_tolerance,
                        eval_samples=f.gap_samples)


def apply_preset(presets: Dict[str, Dict[str, Any]]):
  """Sets the flags of preset --preset (if any) that were not given on the command line."""
  for name, value in presets.get(flags.FLAGS.preset, {}).items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def decoder_use_cudnn(mode: str):
  """`methods.decoder_use_cudnn` for `mode` and --refine_gradient."""
  f = flags.FLAGS
  # The learned refiner's training records its steps whole, second order included.
  return methods.decoder_use_cudnn(mode, "unrolled" if f.refiner == "learned"
                                   else f.refine_gradient)


def kl_schedule(steps_per_epoch: int):
  """The KL weight schedule of the flags, for the --epochs epochs of `steps_per_epoch` batches
  after any --pretrain_epochs; settings it cannot take are a usage error naming them."""
  try:
    return _kl_schedule(steps_per_epoch)
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def _kl_schedule(steps_per_epoch: int):
  f = flags.FLAGS
  if f.kl_schedule == "cyclical":
    return schedules.Cyclical((f.epochs - f.pretrain_epochs) * steps_per_epoch, f.kl_cycles,
                              f.kl_cycle_rise)
  if f.kl_schedule == "linear" and f.warmup:
    return schedules.Linear(f.warmup * steps_per_epoch)
  return schedules.Constant(f.beta if f.kl_schedule == "constant" else 1.0)


def model_from_flags(decoder, encoder, mode: str, latent_dim: int, steps_per_epoch: int,
                     largest_batch: Dict[str, Any],
                     generation_length: Optional[int] = None) -> SemiAmortizedVAE:
  """The training binaries' model: the refiner, warm-up, seed and optimizer from the shared
  flags, compiled (build it inside the distribution strategy's scope); `generation_length` as
  `SemiAmortizedVAE` takes it (text). `largest_batch`, the largest the run trains on, is where
  --refine_gradient=auto measures memory."""
  f = flags.FLAGS
  batch_mean = f.svi_step_scale == "batch_mean"
  auto = f.refine_gradient == "auto"
  svi_config = SVIConfig(steps=f.svi_steps, gradient="unrolled" if auto else f.refine_gradient,
                         keep_steps=f.refine_keep_steps,
                         batch_size=f.batch_size if batch_mean else None,
                         **svi_settings(mode, decoder.domain))
  learned = f.refiner == "learned" and methods.METHODS[mode].refines
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=latent_dim,
                           svi_config=svi_config, test_svi_steps=f.test_svi_steps,
                           refiner=refiners.LearnedRefiner(latent_dim, f.refiner_units)
                           if learned else None,
                           kl_schedule=kl_schedule(steps_per_epoch), free_bits=f.free_bits,
                           pretrain_steps=f.pretrain_epochs * steps_per_epoch,
                           seed=f.seed, generation_length=generation_length)
  optimizer = make_optimizer(f.optimizer, f.learning_rate, f.max_grad_norm)
  if keras.mixed_precision.dtype_policy().name == "mixed_float16":
    # float16 gradients underflow unless the loss is scaled (dynamically, as Keras does).
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, auto_scale_loss=False, jit_compile=f.jit_compile)
  if auto and model.method.differentiates_refinement and f.svi_steps and not learned:
    print(choose_refine_gradient(model, largest_batch, f.memory_fraction).describe(),
          flush=True)
  return model




def latent_dim(method: str, size: int) -> int:
  """The decoder's latent size for `method`: 0 for a method without a latent (the LM)."""
  return size if methods.METHODS[method].uses_latent else 0


def start_run(binary, presets: Dict[str, Dict[str, Any]]):
  """A training binary's first steps, in their order: the --preset's flags, the strategy (first:
  a cluster configures itself at start-up), the run directory claimed with the flags of
  `binary` (its module) and this package's, the precision policy, the seeds. Returns (strategy,
  the modules whose flags define the run)."""
  apply_preset(presets)
  made = strategy()
  modules = [binary, savae_flags]
  claim_run_directory(modules, made)
  set_precision_policy()
  seed_everything()
  return made, modules


def seed_everything():
  """Seeds Python, NumPy, TensorFlow and Keras with --seed: initial weights are drawn from it, in
  the order models are built."""
  keras.utils.set_random_seed(flags.FLAGS.seed)
