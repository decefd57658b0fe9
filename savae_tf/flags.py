"""absl flags shared by every binary, defined once here.

Names follow the paper's code where one exists. Binaries call the `define_*` functions they need
before `app.run`.
"""

from absl import flags

from savae_tf import svi


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


def define_seed_flag():
  flags.DEFINE_integer("seed", 3435, "Random seed; a run on CPU with the same seed repeats.")


def svi_max_grad_norm(value: float):
  """The clip as `refine` takes it: None when disabled."""
  return value if value > 0 else None
