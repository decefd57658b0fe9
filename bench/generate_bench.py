"""Benchmark: sentences per second drawn by `decoding.decode` at several lengths.

An LSTM decoder with a latent (sizes by flag; the default is the paper's text model: embedding
512, LSTM 1024, vocabulary 10,000, latent 32) draws a batch of sentences by ancestral sampling
(temperature 1) to exactly `max_length` tokens (no end token), compiled with `tf.function`; the
median of `--repeats` calls after a warm-up. With a carried state the time per token stays flat
as the length grows; rerunning the prefix at every token makes it grow linearly.

  python bench/generate_bench.py                       # the table in BENCHMARKS.md
  python bench/generate_bench.py --lengths=20,50,100 --batch=32
"""

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import keras
import tensorflow as tf

from savae_tf import decoding
from savae_tf.networks.text import LSTMDecoder

flags.DEFINE_integer("word_dim", 512, "Embedding size.")
flags.DEFINE_integer("hidden_dim", 1024, "LSTM size.")
flags.DEFINE_integer("latent_dim", 32, "Latent size.")
flags.DEFINE_integer("vocab", 10000, "Vocabulary size.")
flags.DEFINE_integer("batch", 32, "Sentences drawn per call.")
flags.DEFINE_list("lengths", ["20", "50", "100"], "Values of max_length.")
flags.DEFINE_integer("repeats", 3, "Timed calls per length (median reported).")
FLAGS = flags.FLAGS


def main(_):
  keras.utils.set_random_seed(0)
  decoder = LSTMDecoder(FLAGS.vocab, FLAGS.word_dim, FLAGS.hidden_dim, FLAGS.latent_dim)
  z = tf.random.normal([FLAGS.batch, FLAGS.latent_dim])
  draw = tf.function(lambda length: decoding.decode(decoder, z, 1, length, 1.0,
                                                    tf.constant([0, 0])).tokens)
  print(describe_machine())
  print(f"text decoder: embedding {FLAGS.word_dim}, LSTM {FLAGS.hidden_dim}, latent "
        f"{FLAGS.latent_dim}, vocab {FLAGS.vocab}, batch {FLAGS.batch}, temperature 1")
  print("| max_length | s per batch | sentences/s | ms per token |")
  print("|---|---|---|---|")
  for length in [int(n) for n in FLAGS.lengths]:
    seconds, _ = measure(lambda: draw(tf.constant(length)), FLAGS.repeats)
    print(f"| {length} | {seconds:.3f} | {FLAGS.batch / seconds:.1f} | "
          f"{1000 * seconds / length:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
