"""Trains a text model (LM, VAE, SVI, VAE+SVI(+KL), SA-VAE) on real text, resumably.

  python bin/train_text.py --dataset=ptb --method=savae --model_dir=runs/ptb-savae
  python bin/train_text.py --data_dir=yahoo/ --preset=yahoo --method=savae --model_dir=runs/yahoo
  python bin/train_text.py --train_file=a.txt --valid_file=b.txt --test_file=c.txt ...

Killed at any moment, the same command resumes from the last checkpoint in --model_dir. Writes
into --model_dir: config.json, vocab.json and weights/ (the best validation model; what
bin/evaluate.py, bin/generate.py and bin/export_savedmodel.py load), checkpoints/, logs/
(TensorBoard), metrics.json (every epoch, then the test metrics of the best model).
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
from savae_tf.experiments import text
from savae_tf.experiments.runner import run_experiment

# Per-example step for text: chosen on Penn Treebank's validation data (RESULTS.md).
savae_flags.define_svi_flags()
savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_xla_sweeps_flag()
savae_flags.define_training_flags(epochs=30, optimizer="sgd", learning_rate=1.0, warmup=10)
savae_flags.define_run_flags(presets=text.PRESETS)
savae_flags.define_text_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help


def main(_):
  run_experiment(text.experiment(sys.modules[__name__]))


if __name__ == "__main__":
  savae_flags.run(main)
