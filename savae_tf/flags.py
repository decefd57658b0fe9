"""absl flags shared by every binary, defined once here.

Names follow the paper's code where one exists. Binaries call the `define_*` functions they need
before `app.run`.
"""

from typing import Any, Dict

from absl import flags

from savae_tf import svi
from savae_tf import training
from savae_tf.model import SemiAmortizedVAE, SVIConfig


def define_svi_flags():
  """The refiner's settings (train and test time)."""
  flags.DEFINE_integer("svi_steps", 20, "Refinement steps K (0 = no refinement).", lower_bound=0)
  flags.DEFINE_float("svi_lr", 1.0, "Refinement step size, for both mean and logvar.")
  flags.DEFINE_float("momentum", 0.5, "Heavy-ball momentum of the refinement.")
  flags.DEFINE_float(
      "svi_max_grad_norm", 5.0,
      "The refiner's clip: L2 norm (over the whole batch) of the mean and logvar gradients, "
      "clipped separately; <= 0 disables it.")
  flags.DEFINE_enum(
      "refine_gradient", "reverse", svi.GRADIENT_MODES,
      "How gradients flow through the refinement: 'unrolled' (exact, memory grows with K), "
      "'reverse' (exact Hessian-vector products, memory flat in K), 'finite_difference' "
      "(approximate; first-order gradients only, so it runs on cuDNN LSTM kernels), 'none'. "
      "The exact modes need second-order gradients, which cuDNN LSTM kernels lack: on GPU they "
      "run the LSTMs with use_cudnn=False.")


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
  flags.DEFINE_integer("warmup", warmup,
                       "KL warm-up in epochs (beta rises from 0.1 to 1); 0: beta = 1.",
                       lower_bound=0)
  flags.DEFINE_integer("test_svi_steps", None, "K at test time (default: --svi_steps).",
                       lower_bound=0)
  flags.DEFINE_integer("num_samples", 500, "Importance samples for the test iw_nll (0 skips it).",
                       lower_bound=0)


def define_run_flags(presets):
  """The flags of a resumable training run (train_text.py, train_images.py): its directory,
  checkpoints, export, distribution strategy, and a --preset among `presets`."""
  flags.DEFINE_integer("checkpoint_every", 500, "Also checkpoint every N steps (0: epochs only).",
                       lower_bound=0)
  flags.DEFINE_string("model_dir", None, "The run's directory (resumes if it has checkpoints).",
                      required=True)
  flags.register_validator("model_dir", training.validate_model_dir,
                           message="--model_dir names an existing file; give a directory.")
  flags.DEFINE_string("export_dir", None, "If set, the best model is exported there as a "
                      "SavedModel (<export_dir>/<version>).")
  flags.DEFINE_enum("strategy", "default", training.STRATEGIES,
                    "tf.distribute strategy: one device, all local devices (mirrored), or the "
                    "cluster in TF_CONFIG (multi_worker).")
  flags.DEFINE_enum("preset", None, list(presets), "The paper's recipe in one word; flags given "
                    "explicitly still win.")


def define_seed_flag():
  flags.DEFINE_integer("seed", 3435, "Random seed; a run on CPU with the same seed repeats.")


def svi_max_grad_norm(value: float):
  """The clip as `refine` takes it: None when disabled."""
  return value if value > 0 else None


def apply_preset(presets: Dict[str, Dict[str, Any]]):
  """Sets the flags of preset --preset (if any) that were not given on the command line."""
  for name, value in presets.get(flags.FLAGS.preset, {}).items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def model_from_flags(decoder, encoder, mode: str, latent_dim: int,
                     steps_per_epoch: int) -> SemiAmortizedVAE:
  """The training binaries' model: the refiner, warm-up, seed and optimizer from the shared
  flags, compiled (build it inside the distribution strategy's scope)."""
  f = flags.FLAGS
  svi_config = SVIConfig(steps=f.svi_steps, lr=f.svi_lr, momentum=f.momentum,
                         max_grad_norm=svi_max_grad_norm(f.svi_max_grad_norm),
                         gradient=f.refine_gradient)
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=latent_dim,
                           svi_config=svi_config, test_svi_steps=f.test_svi_steps,
                           kl_warmup_steps=f.warmup * steps_per_epoch, seed=f.seed)
  model.compile(optimizer=training.make_optimizer(f.optimizer, f.learning_rate,
                                                 f.max_grad_norm))
  return model
