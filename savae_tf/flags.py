"""absl flags shared by every binary, defined once here.

Names follow the paper's code where one exists. Binaries call the `define_*` functions they need
before `app.run`.
"""

import sys
from typing import Any, Dict, Optional

from absl import app
from absl import flags
from absl import logging
import keras
import tensorflow as tf

from savae_tf import cluster
from savae_tf import console
from savae_tf import devices
from savae_tf import methods
from savae_tf import runs
from savae_tf import schedules
from savae_tf import svi
from savae_tf import training
from savae_tf.model import DEFAULT_SVI_LR, SemiAmortizedVAE, SVIConfig


PRECISION_POLICIES = ["float32", "mixed_float16", "mixed_bfloat16"]

# The step size --svi_lr defaults to, per convention; a binary sets its data's per-example step.
_DEFAULT_SVI_LR = dict(DEFAULT_SVI_LR)


def define_svi_flags(per_example_lr: float = DEFAULT_SVI_LR["per_example"]):
  """The refiner's settings (train and test time); `per_example_lr` is this binary's default
  step under the per-example convention (each data kind's is chosen on its validation data)."""
  _DEFAULT_SVI_LR["per_example"] = per_example_lr
  flags.DEFINE_integer("svi_steps", 20, "Refinement steps K (0 = no refinement).", lower_bound=0)
  flags.DEFINE_enum(
      "svi_step_scale", "per_example", svi.STEP_SCALES,
      "The refiner's convention. 'per_example': each example moves by svi_lr times its own "
      "gradient, clipped by its own norm, so no example depends on its batch. 'batch_mean': the "
      "paper's (the objective is the batch mean, so each example moves by svi_lr / batch of its "
      "gradient, and the clip norm is over the whole batch); for reproducing its numbers. "
      "Evaluation and exported models always refine per example (batch_mean models with "
      "svi_lr / batch_size and a clip of svi_max_grad_norm * batch_size).")
  flags.DEFINE_float("svi_lr", None, "Refinement step size, for both mean and logvar (default: "
                     + ", ".join(f"{v:g} for {k}" for k, v in _DEFAULT_SVI_LR.items()) + ").")
  flags.DEFINE_float("momentum", 0.5, "Heavy-ball momentum of the refinement.")
  flags.DEFINE_float(
      "svi_max_grad_norm", 5.0,
      "The refiner's clip: L2 norm of the mean and logvar gradients, clipped separately, per "
      "example (or over the whole batch with --svi_step_scale=batch_mean); <= 0 disables it.")
  flags.DEFINE_enum(
      "refine_gradient", "auto", ("auto",) + svi.GRADIENT_MODES,
      "How gradients flow through the refinement: 'auto' (the fastest exact mode whose memory "
      "fits --memory_fraction of the device's free memory, measured on the largest batch: "
      "'unrolled', else 'reverse' keeping as many steps as fit), 'unrolled' (exact, memory "
      "grows with K), 'reverse' (exact Hessian-vector products, memory flat in K), "
      "'finite_difference' (approximate; first-order gradients only, so it runs on cuDNN LSTM "
      "kernels), 'none'. The exact modes need second-order gradients, which cuDNN LSTM kernels "
      "lack: with them an SA-VAE's decoder never runs cuDNN.")
  flags.DEFINE_float("memory_fraction", 0.5, "--refine_gradient=auto's budget: this fraction of "
                     "the free memory of the GPU (or, without one, of the host).",
                     lower_bound=0.01, upper_bound=1.0)
  flags.DEFINE_integer(
      "refine_keep_steps", 0,
      "Memory budget of 'reverse' and 'finite_difference', in steps: the last N refinement "
      "steps keep their activations and are differentiated as 'unrolled' (faster, memory grows "
      "by one step's activations each); 0 keeps memory flat in K.", lower_bound=0)
  flags.register_multi_flags_validator(
      ["refine_keep_steps", "refine_gradient"],
      lambda f: not f["refine_keep_steps"] or f["refine_gradient"] in svi.SWEPT_MODES,
      message="--refine_keep_steps needs --refine_gradient=reverse or finite_difference.")


def define_training_flags(epochs: int, optimizer: str, learning_rate: float, warmup: int,
                          batch_size: int = 32):
  """The optimisation flags every training binary has, with that binary's defaults."""
  flags.DEFINE_integer("epochs", epochs, "Training epochs (at most).", lower_bound=1)
  flags.DEFINE_integer("batch_size", batch_size, "Examples (sentences or images) per batch.",
                       lower_bound=1)
  flags.DEFINE_enum("optimizer", optimizer, training.OPTIMIZERS, "Optimizer.")
  flags.DEFINE_float("learning_rate", learning_rate, "The optimizer's learning rate.",
                     lower_bound=0.0)
  flags.DEFINE_float("max_grad_norm", 5.0,
                     "The optimizer's global-norm clip over all parameters; <= 0 disables it.")
  flags.DEFINE_enum("kl_schedule", "linear", list(schedules.SCHEDULES),
                    "The KL weight beta per batch: 'linear' (the paper's warm-up over --warmup "
                    "epochs), 'constant' (--beta; < 1 is a beta-VAE) or 'cyclical' (Fu et al. "
                    "2019: --kl_cycles cycles over the whole run, beta rising from 0 to 1 over "
                    "the first --kl_cycle_rise of each).")
  flags.DEFINE_integer("warmup", warmup,
                       "Linear KL warm-up in epochs (beta rises from 0.1 and reaches 1 after 90% "
                       "of it); 0: beta = 1.",
                       lower_bound=0)
  flags.DEFINE_float("beta", 1.0, "The constant KL weight of --kl_schedule=constant.",
                     lower_bound=0.0)
  flags.DEFINE_integer("kl_cycles", 4, "Cycles of --kl_schedule=cyclical.", lower_bound=1)
  flags.DEFINE_float("kl_cycle_rise", 0.5, "Fraction of each cycle over which beta rises.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_integer("pretrain_epochs", 0, "Autoencoder pretraining (Li et al. 2019): beta = 0 "
                       "for this many epochs, then a fresh decoder with the pretrained encoder, "
                       "and the KL schedule from there. 0: off.", lower_bound=0)
  flags.register_multi_flags_validator(
      ["pretrain_epochs", "epochs"], lambda f: f["pretrain_epochs"] < f["epochs"],
      message="--pretrain_epochs must be fewer than --epochs.")
  flags.DEFINE_float("free_bits", 0.0, "Free bits lambda in nats per latent dimension (Kingma "
                     "et al. 2016; Li et al. 2019): the training KL is sum_d max(lambda, KL_d) "
                     "over batch means; reported bounds stay true. 0: off.", lower_bound=0.0)
  flags.DEFINE_integer("test_svi_steps", None, "K at test time (default: --svi_steps).",
                       lower_bound=0)
  flags.DEFINE_integer("num_samples", 500, "Importance samples for the test iw_nll (0 skips it).",
                       lower_bound=0)
  flags.DEFINE_bool("jit_compile", False, "Compile the whole training step with XLA. Off by "
                    "default on every device (Keras' own default would turn it on for the image "
                    "models wherever a GPU is present): not yet measured to help.")


def define_run_flags(presets):
  """The flags of a resumable training run (train_text.py, train_images.py): its directory,
  checkpoints, export, distribution strategy, and a --preset among `presets`."""
  flags.DEFINE_integer("checkpoint_every", 500, "Also checkpoint every N steps (0: epochs only).",
                       lower_bound=0)
  flags.DEFINE_string("model_dir", None, "The run's directory (resumes if it has checkpoints).",
                      required=True)
  flags.register_validator("model_dir", training.validate_model_dir,
                           message="--model_dir names an existing file; give a directory.")
  flags.DEFINE_bool("overwrite", False, "If --model_dir holds a run with other flags, delete it "
                    "and start afresh (without it, such a resume is refused).")
  flags.DEFINE_string("export_dir", None, "If set, the best model is exported there as a "
                      "SavedModel (<export_dir>/<version>).")
  flags.DEFINE_enum("strategy", "default", training.STRATEGIES,
                    "tf.distribute strategy: one device, all local devices (mirrored), or the "
                    "cluster in TF_CONFIG (multi_worker).")
  flags.DEFINE_enum("preset", None, list(presets), "The paper's recipe in one word; flags given "
                    "explicitly still win.")
  define_precision_flag()


# What a resumed run may change: how long it trains, where it writes, how it is distributed or
# read (the same batches either way), how the device computes it (the same function up to float
# rounding: a run moved to another machine may choose again), and what its test reports. Every
# other flag defines the run.
RESUMABLE_CHANGES = frozenset({"epochs", "checkpoint_every", "export_dir", "model_dir",
                               "overwrite", "num_samples", "test_svi_steps", "strategy",
                               "streaming", "memory_fraction", "jit_compile", "xla_sweeps",
                               "tf32"})


def claim_run_directory(modules, strategy):
  """`runs.claim_run_directory` for --model_dir with the defining flags of `modules` (the binary
  and this one), and --export_dir checked writable: call it before loading data, outside the
  strategy's scope (`strategy` says which worker writes run.json). Any refusal is a usage error."""
  f = flags.FLAGS
  defining = {name: value for name, value in training.flag_values(f, modules).items()
              if name not in RESUMABLE_CHANGES}
  with strategy.scope():
    chief = cluster.is_chief()
  try:
    runs.claim_run_directory(f.model_dir, defining, f.overwrite, write=chief)
    if f.export_dir:
      runs.ensure_writable(f.export_dir, "--export_dir")
  except runs.RunDirectoryError as error:
    raise app.UsageError(str(error)) from None


def strategy():
  """The --strategy, made first thing in a binary's main: a multi-worker strategy must exist
  before TensorFlow runs anything (it configures its collectives at startup)."""
  try:
    with console.start_up_logs_hidden():  # a cluster's start-up logs a line per device
      return training.make_strategy(flags.FLAGS.strategy)
  except ValueError as error:
    raise app.UsageError(str(error)) from None


def define_precision_flag():
  flags.DEFINE_enum("mixed_precision", "float32", PRECISION_POLICIES,
                    "Keras dtype policy of the networks: float32, or mixed precision (float32 "
                    "weights, float16 or bfloat16 arithmetic; lambda, the refiner and the losses "
                    "stay in float32; mixed_float16 scales the loss).")


def set_precision_policy():
  """Makes --mixed_precision the global Keras dtype policy; call it before building networks
  (they keep their policy in their configs, so a reloaded model computes as it trained)."""
  keras.mixed_precision.set_dtype_policy(flags.FLAGS.mixed_precision)


def define_device_flags():
  """The precision switch every binary that refines has (`run` applies it)."""
  flags.DEFINE_bool("tf32", False, "Allow TF32 matrix products on GPUs that have them (Ampere "
                    "and later): faster, but with 10-bit mantissas, which spoils "
                    "finite_difference's central differences and costs exact Hessian-vector "
                    "products digits. Off: full float32 (docs/devices.md).")


def define_xla_sweeps_flag():
  """--xla_sweeps, for binaries with LSTMs."""
  flags.DEFINE_enum("xla_sweeps", "auto", devices.XLA_SETTINGS,
                    "Compile the hand-written LSTM recurrences (what an exact refinement runs) "
                    "with XLA: 'auto' on a GPU only (on a CPU it was up to 16% slower at the "
                    "paper's size, and every new sentence length compiles again; "
                    "BENCHMARKS.md).")


def define_seed_flag():
  flags.DEFINE_integer("seed", 3435, "Random seed; a run on CPU with the same seed repeats.")


def svi_max_grad_norm(value: float):
  """The clip as `refine` takes it: None when disabled."""
  return value if value > 0 else None


def svi_lr() -> float:
  """--svi_lr, or the default of --svi_step_scale's convention."""
  f = flags.FLAGS
  return _DEFAULT_SVI_LR[f.svi_step_scale] if f.svi_lr is None else f.svi_lr


def svi_settings() -> Dict[str, Any]:
  """The refiner's keyword arguments of `savae_tf.refine` from the flags."""
  f = flags.FLAGS
  return dict(lr=svi_lr(), momentum=f.momentum,
              max_grad_norm=svi_max_grad_norm(f.svi_max_grad_norm), step_scale=f.svi_step_scale)


def apply_preset(presets: Dict[str, Dict[str, Any]]):
  """Sets the flags of preset --preset (if any) that were not given on the command line."""
  for name, value in presets.get(flags.FLAGS.preset, {}).items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def decoder_use_cudnn(mode: str):
  """`methods.decoder_use_cudnn` for `mode` and --refine_gradient."""
  return methods.decoder_use_cudnn(mode, flags.FLAGS.refine_gradient)


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
                         batch_size=f.batch_size if batch_mean else None, **svi_settings())
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=latent_dim,
                           svi_config=svi_config, test_svi_steps=f.test_svi_steps,
                           kl_schedule=kl_schedule(steps_per_epoch), free_bits=f.free_bits,
                           pretrain_steps=f.pretrain_epochs * steps_per_epoch,
                           seed=f.seed, generation_length=generation_length)
  optimizer = training.make_optimizer(f.optimizer, f.learning_rate, f.max_grad_norm)
  if keras.mixed_precision.dtype_policy().name == "mixed_float16":
    # float16 gradients underflow unless the loss is scaled (dynamically, as Keras does).
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  model.compile(optimizer=optimizer, auto_scale_loss=False, jit_compile=f.jit_compile)
  if auto and model.method.differentiates_refinement and f.svi_steps:
    print(training.choose_refine_gradient(model, largest_batch, f.memory_fraction).describe(),
          flush=True)
  return model


def run(main):
  """absl's `app.run(main)` for a binary: TensorFlow's and absl's Python INFO logs (a line per
  checkpoint shard, for one) are off unless --verbosity is given, so that what the binary prints
  is what a user reads; warnings and errors stay, and TensorFlow's device start-up lines are
  hidden as its import's are (`console`). A usage error is its message and one line pointing at
  --help (absl would print the whole help before it). Matrix products run in full float32 (TF32
  off) unless the binary has --tf32 and it is given."""
  def quiet_main(argv):
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    devices.set_tf32("tf32" in flags.FLAGS and flags.FLAGS.tf32)
    if "strategy" not in flags.FLAGS or flags.FLAGS.strategy != "multi_worker":
      # Starts the devices now (a cluster's strategy must come first: `strategy`).
      with console.start_up_logs_hidden():
        tf.config.list_logical_devices()
    try:
      return main(argv)
    except app.UsageError as error:
      sys.stderr.write(f"error: {error}\nRun with --help to see the flags.\n")
      sys.exit(error.exitcode)
  app.run(quiet_main)
