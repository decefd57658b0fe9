"""Demo of differentiable SVI refinement on a model whose log-likelihood is known exactly.

A linear-Gaussian decoder p(x | z) = N(W z + b, sigma^2 I) with a 2-d latent, a batch of data
drawn from it, and an amortized guess lambda_0 at the prior. `refine` takes K steps; the demo prints
the negative ELBO after each, next to -log p(x), and checks that every gradient mode returns the
gradient of the refined bound with respect to lambda_0 and the decoder that `unrolled` does.

  python bin/refine_demo.py --svi_steps=20 --svi_lr=0.5
"""

import os

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from savae_tf import distributions
from savae_tf import factories
from savae_tf import flags as savae_flags
from savae_tf import refine
from savae_tf import svi
from savae_tf.networks.linear_gaussian import LinearGaussian

savae_flags.define_svi_flags()
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
flags.DEFINE_integer("batch_size", 16, "Examples in the batch.", lower_bound=1)
flags.DEFINE_integer("data_dim", 8, "Dimension of x.", lower_bound=1)
FLAGS = flags.FLAGS


def main(_):
  keras.utils.set_random_seed(FLAGS.seed)
  decoder = LinearGaussian(FLAGS.data_dim, latent_dim=2, noise_std=1.0, dtype="float64")
  x, _ = decoder.sample(FLAGS.batch_size, tf.constant([FLAGS.seed, 0]))
  mean0 = tf.zeros([FLAGS.batch_size, 2], tf.float64)
  logvar0 = tf.zeros_like(mean0)

  def loss_fn(mean, logvar, step):  # one-sample negative ELBO, noise keyed by the step
    z = distributions.sample(mean, logvar, distributions.step_seed([FLAGS.seed, 1], step))
    return -decoder.log_likelihood(x, z) + distributions.kl_to_prior(mean, logvar)

  settings = factories.svi_settings()
  print(f"-log p(x), exact, mean over the batch: {-np.mean(decoder.log_marginal(x)):.4f} nats")
  for k in range(FLAGS.svi_steps + 1):
    mean_k, logvar_k = refine(loss_fn, mean0, logvar0, k, gradient="none", **settings)
    print(f"K={k:3d}  nll_bound (-ELBO, closed form) = "
          f"{-np.mean(decoder.elbo(x, mean_k, logvar_k)):.4f}")

  sources = [mean0, logvar0, decoder.kernel.value, decoder.bias.value]
  gradients = {}
  for mode in svi.GRADIENT_MODES[:3]:
    with tf.GradientTape() as tape:
      tape.watch(sources[:2])
      mean_k, logvar_k = refine(loss_fn, mean0, logvar0, FLAGS.svi_steps, gradient=mode,
                                **settings)
      bound = -tf.reduce_mean(decoder.elbo(x, mean_k, logvar_k))
    gradients[mode] = np.concatenate(
        [np.ravel(g) for g in tape.gradient(bound, sources)])
  reference = gradients["unrolled"]
  for mode, grad in gradients.items():
    error = np.linalg.norm(grad - reference) / np.linalg.norm(reference)
    print(f"gradient of the refined bound, {mode:>17}: relative difference to unrolled "
          f"{error:.1e}")


if __name__ == "__main__":
  savae_flags.run(main)
