"""Benchmark: the token NLL written out (`objectives.token_nll`: logsumexp minus the target's
logit) against TensorFlow's fused sparse cross-entropy kernel, for its value (what `iw_nll`'s
importance samples need), its gradient (every training step) and the gradient of its gradient
(each step of the exact refinement), on the logits of one output layer.

  python bench/nll_bench.py                  # an iw_nll chunk at the PTB table's size
  python bench/nll_bench.py --tokens=672 --hidden=1024 --vocab=10000   # a paper-size batch

--tokens target tokens (default: 4 importance samples of 32 sentences of 24 tokens). Times are
medians of --repeats calls; the last column is each row's time over the output layer's alone.
"""

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import tensorflow as tf

from savae_tf import objectives

flags.DEFINE_integer("tokens", 4 * 32 * 24, "Target tokens.")
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
  direction = generator.normal([FLAGS.tokens, FLAGS.hidden])

  def fused(logits):
    return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets,
                                                                        logits=logits))

  def written_out(logits):
    return tf.reduce_sum(objectives.token_nll(logits, targets, mask))

  def value(nll):
    return lambda: nll((hidden @ kernel)[None])

  def gradient(nll):  # with respect to the output layer's input, as the refinement's is
    def run():
      with tf.GradientTape() as tape:
        tape.watch(hidden)
        total = nll((hidden @ kernel)[None])
      return tape.gradient(total, hidden)
    return run

  def second_order(nll):  # the Hessian of the NLL in `hidden` times a direction
    def run():
      with tf.GradientTape() as tape:
        tape.watch([hidden, kernel])
        directional = tf.reduce_sum(gradient(nll)() * direction)
      return tape.gradient(directional, [hidden, kernel])
    return run

  rows = [("output layer", lambda: hidden @ kernel)]
  for order, make in (("value", value), ("gradient", gradient),
                      ("gradient of the gradient", second_order)):
    rows += [(f"{order}: fused kernel", make(fused)), (f"{order}: written out", make(written_out))]
  print(describe_machine())
  print(f"tokens {FLAGS.tokens}, hidden {FLAGS.hidden}, vocabulary {FLAGS.vocab}")
  print("| computation | ms | x output layer |\n|---|---|---|")
  base = None
  for name, fn in rows:
    compiled = tf.function(fn)
    seconds, _ = measure(lambda: tf.nest.map_structure(lambda t: t.numpy(), compiled()),
                         FLAGS.repeats)
    base = base or seconds
    print(f"| {name} | {seconds * 1000:.1f} | {seconds / base:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
