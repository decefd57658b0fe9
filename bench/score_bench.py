"""Benchmark: `score` throughput through a loaded SavedModel, in sentences per second.

The model is the synthetic experiment's SA-VAE at its real size (the oracle-shaped generator:
embedding 100, LSTM 100, MLP 500, vocabulary 1000, latent 2; encoder LSTM 100), exported and loaded
back with `tf.saved_model.load`, so what is timed is what a serving system runs. Weights are
random (throughput does not depend on them). Sentences are the model's own samples from the prior,
5 words as in the experiment. Or give --saved_model to time an existing export.

  python bench/score_bench.py                      # the table in BENCHMARKS.md
  python bench/score_bench.py --saved_model=export/synthetic/learned-savae

Rows: every (steps, num_samples) pair at --batch; then the target row, --total sentences with 500
samples and 20 steps, scored in batches of --batch.
"""

import tempfile
import time

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import keras
import tensorflow as tf

from savae_tf import export
from savae_tf.data import synthetic
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.synthetic import SyntheticGenerator
from savae_tf.networks.text import LSTMEncoder


flags.DEFINE_string("saved_model", None, "An export to time (default: build the synthetic one).")
flags.DEFINE_integer("vocab", 1000, "Vocabulary of the built model.")
flags.DEFINE_integer("hidden", 100, "Embedding and LSTM sizes of the built model.")
flags.DEFINE_integer("mlp", 500, "MLP size of the built model's generator.")
flags.DEFINE_integer("batch", 64, "Sentences per call.")
flags.DEFINE_integer("length", 5, "Words per sentence.")
flags.DEFINE_list("steps", ["0", "20"], "Values of `steps`.")
flags.DEFINE_list("num_samples", ["1", "500"], "Values of `num_samples`.")
flags.DEFINE_integer("total", 1000, "Sentences in the target row (0 skips it).")
flags.DEFINE_integer("repeats", 3, "Timed calls per row (median reported).")
FLAGS = flags.FLAGS


def build_export(directory):
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(
      SyntheticGenerator(FLAGS.vocab, FLAGS.hidden, FLAGS.hidden, FLAGS.mlp),
      LSTMEncoder(FLAGS.vocab + 1, FLAGS.hidden, FLAGS.hidden, 2), mode="savae", latent_dim=2,
      svi_config=SVIConfig(steps=20))
  return export.export(model, synthetic.vocabulary(FLAGS.vocab), directory)


def main(_):
  with tempfile.TemporaryDirectory() as directory:
    path = export.latest_version(FLAGS.saved_model or build_export(directory))
    signatures = tf.saved_model.load(path).signatures
    score = signatures["score"]

    def sentences(n):  # the model's own prior samples
      return signatures["sample"](num=tf.constant(n), max_length=tf.constant(FLAGS.length),
                                  temperature=tf.constant(1.0), seed=tf.constant(0))["sentences"]

    print(describe_machine())
    print(f"SavedModel: {FLAGS.saved_model or 'synthetic-size SA-VAE'}, batch {FLAGS.batch}, "
          f"{FLAGS.length} words per sentence")
    print("| steps | num_samples | s per call | sentences/s | peak MiB |")
    print("|---|---|---|---|---|")
    batch = sentences(FLAGS.batch)
    for steps in [int(k) for k in FLAGS.steps]:
      for samples in [int(s) for s in FLAGS.num_samples]:
        seconds, peak = measure(lambda: score(sentences=batch, steps=tf.constant(steps),
                                              num_samples=tf.constant(samples)), FLAGS.repeats)
        print(f"| {steps} | {samples} | {seconds:.3f} | {FLAGS.batch / seconds:.0f} | "
              f"{peak:.0f} |", flush=True)
    if FLAGS.total:
      data = sentences(FLAGS.total)
      start = time.perf_counter()
      for i in range(0, FLAGS.total, FLAGS.batch):
        score(sentences=data[i:i + FLAGS.batch], steps=tf.constant(20),
              num_samples=tf.constant(500))
      seconds = time.perf_counter() - start
      print(f"{FLAGS.total} sentences, 500 samples, 20 steps, batches of {FLAGS.batch}: "
            f"{seconds:.1f} s ({FLAGS.total / seconds:.0f} sentences/s)")


if __name__ == "__main__":
  app.run(main)
