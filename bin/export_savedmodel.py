"""Exports a trained model directory as a SavedModel (the contract: export/README.md).

  python bin/export_savedmodel.py --model_dir=runs/synthetic/learned-savae --export_dir=export/synthetic

writes <export_dir>/<version>/ (the next integer version unless --version is given) and prints its
path.
"""

import os

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags

from savae_tf import export
from savae_tf import flags as savae_flags
from savae_tf import runs

flags.DEFINE_string("model_dir", None, "A model directory written by a training binary.",
                    required=True)
flags.DEFINE_string("export_dir", None, "Where version directories are written.", required=True)
flags.DEFINE_integer("version", None, "Version number (default: one past the largest there).",
                     lower_bound=1)
FLAGS = flags.FLAGS


def main(_):
  try:
    model, vocabulary = runs.load_model(FLAGS.model_dir)
  except (FileNotFoundError, ValueError) as error:
    raise app.UsageError(str(error)) from None
  try:
    path = export.export(model, vocabulary, FLAGS.export_dir, FLAGS.version)
  except FileExistsError as error:
    raise app.UsageError(str(error)) from None
  print(f"SavedModel written to {path}")


if __name__ == "__main__":
  savae_flags.run(main)
