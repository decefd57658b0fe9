"""absl flags shared by every binary, defined once here.

Names follow the paper's code where one exists. Binaries call the `define_*` functions they need
before `app.run`.
"""

from absl import flags

from savae_tf import svi
from savae_tf import training


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


def define_training_flags(epochs: int, optimizer: str, learning_rate: float, warmup: int):
  """The optimisation flags every training binary has, with that binary's defaults."""
  flags.DEFINE_integer("epochs", epochs, "Training epochs (at most).", lower_bound=1)
  flags.DEFINE_integer("batch_size", 32, "Sentences per batch.", lower_bound=1)
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


def define_seed_flag():
  flags.DEFINE_integer("seed", 3435, "Random seed; a run on CPU with the same seed repeats.")


def svi_max_grad_norm(value: float):
  """The clip as `refine` takes it: None when disabled."""
  return value if value > 0 else None
