"""Benchmark: the token NLL of one importance-sampling chunk, as `iw_nll` computes it, with the
fused cross-entropy kernel (`for_gradient=True`, what training uses) and with logsumexp minus
the target's logit (`for_gradient=False`, what evaluation uses).

  python bench/nll_bench.py                 # the PTB table's size: hidden 128, vocabulary 10,002
  python bench/nll_bench.py --hidden=1024 --vocab=10000

A chunk is --tokens target tokens (4 importance samples of a batch of 32 sentences of 24 tokens
by default). Rows: the output layer alone, then the output layer and each NLL; times are medians
of --repeats calls, and the last column is each row's time over the output layer's.
"""

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import tensorflow as tf

from savae_tf import objectives

flags.DEFINE_integer("tokens", 4 * 32 * 24, "Target tokens per chunk.")
flags.DEFINE_integer("hidden", 128, "Decoder hidden size (the output layer's input).")
flags.DEFINE_integer("vocab", 10002, "Vocabulary (the output layer's output).")
flags.DEFINE_integer("repeats", 10, "Timed calls per row (median reported).")
FLAGS = flags.FLAGS


def main(_):
  generator = tf.random.Generator.from_seed(0)
  hidden = generator.normal([FLAGS.tokens, FLAGS.hidden])
  kernel = generator.normal([FLAGS.hidden, FLAGS.vocab], stddev=FLAGS.hidden ** -0.5)
  targets = generator.uniform([1, FLAGS.tokens], 0, FLAGS.vocab, tf.int32)  # one long row
  mask = tf.ones([1, FLAGS.tokens], bool)

  def nll_of(for_gradient):
    return tf.function(lambda: objectives.token_nll((hidden @ kernel)[None], targets, mask,
                                                    for_gradient))

  rows = [("output layer", tf.function(lambda: hidden @ kernel)),
          ("output layer + fused cross-entropy (for_gradient=True)", nll_of(True)),
          ("output layer + logsumexp - target logit (for_gradient=False)", nll_of(False))]
  print(describe_machine())
  print(f"tokens {FLAGS.tokens}, hidden {FLAGS.hidden}, vocabulary {FLAGS.vocab}")
  print("| computation | ms | x output layer |\n|---|---|---|")
  base = None
  for name, fn in rows:
    seconds, _ = measure(lambda: fn().numpy(), FLAGS.repeats)
    base = base or seconds
    print(f"| {name} | {seconds * 1000:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
  app.run(main)
