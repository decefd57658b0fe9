"""The synthetic experiment of Kim et al. (2018), Table 1: VAE, SVI and SA-VAE on sequences from
a known oracle, with the oracle's generator fixed ("oracle") or learned ("learned").

  python bin/train_synthetic.py --method=all --generator=both --model_dir=runs/synthetic \
      --export_dir=export/synthetic

Prints each run's test metrics and, with --method=all, the table beside the paper's numbers; writes
the table's metrics.json into --model_dir and each trained model into --model_dir/<generator>-<method>
(savae_tf/runs.py), and with --export_dir a SavedModel of each into
--export_dir/<generator>-<method>/<version>. Assumptions about the oracle: savae_tf/data/synthetic.py.

Then it draws (with matplotlib; without it, one line says why not) into --model_dir/pictures/, also
as TensorBoard images in --model_dir/logs/pictures, and lists them in metrics.json ("pictures"):
  posteriors-oracle.png       for the first test sequences, the true posterior p(z | x) of the
                              oracle (quadrature) beside each oracle-generator model's q (the VAE's
                              encoder's, SVI's and SA-VAE's after K steps); with a learned
                              generator the truth would be that model's own, so none is drawn.
  posterior_means-<kind>.png  each model's posterior means of the test set, a panel per model, over
                              the true posterior means for the oracle generator.
and each trained model's training curves into --model_dir/<generator>-<method>/pictures/.
"""

import os
import sys

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's CPU allocator then tracks its peak: --refine_gradient=auto measures exactly on a
# CPU too, as the benchmarks do (savae_tf.devices.PeakMemory).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import flags

from savae_tf import flags as savae_flags
from savae_tf.experiments import synthetic

# Per-example step for the synthetic data: chosen on its validation set (RESULTS.md).
savae_flags.define_svi_flags()
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_xla_sweeps_flag()
savae_flags.define_training_flags(epochs=5, optimizer="adam", learning_rate=1e-3, warmup=0)
savae_flags.define_synthetic_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help


def main(_):
  synthetic.run(sys.modules[__name__])


if __name__ == "__main__":
  savae_flags.run(main)
