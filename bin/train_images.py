"""Trains an image model (gated PixelCNN, VAE, SVI, VAE+SVI(+KL), SA-VAE) on binarized images.

  python bin/train_images.py --method=savae --model_dir=runs/mnist-savae        # MNIST subset
  python bin/train_images.py --dataset=omniglot --data_dir=chardata.mat --preset=omniglot \
      --method=savae --model_dir=runs/omniglot-savae

Killed at any moment, the same command resumes from the last checkpoint in --model_dir. Writes into
--model_dir: config.json and weights/ (the best validation model; what bin/export_savedmodel.py
loads), checkpoints/, logs/ (TensorBoard: metrics and pictures), pictures/*.png (reconstructions,
samples from the prior, a latent traversal), metrics.json (every epoch, then the test metrics of
the best model). Training images are binarized afresh every batch; validation and test once, with
--binarize_seed.
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
from savae_tf.experiments import images
from savae_tf.experiments.runner import run_experiment

# Per-example step for images: chosen on the MNIST subset's validation data (RESULTS.md).
savae_flags.define_svi_flags()
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_training_flags(epochs=100, optimizer="adam", learning_rate=1e-3, warmup=10,
                                  batch_size=50)
savae_flags.define_run_flags(presets=images.PRESETS)
savae_flags.define_image_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help


def main(_):
  run_experiment(images.experiment(sys.modules[__name__]))


if __name__ == "__main__":
  savae_flags.run(main)
