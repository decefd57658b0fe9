"""Benchmark of `savae_tf.refine`: time and peak memory of each gradient mode against K.

One call = K refinement steps + the loss at lambda_K + the gradient of that loss with respect to
lambda_0 and every decoder variable (what a SA-VAE training step adds to a VAE step). The unit is
one plain gradient evaluation of the same loss (loss + gradient w.r.t. lambda and theta), measured
in the same process, so the ratios are comparable across noisy machines.

Peak memory is TensorFlow's CPU allocator peak during the call, minus what was allocated before it.

  python bench/refine_bench.py                       # the table in BENCHMARKS.md
  python bench/refine_bench.py --steps=0,20 --modes=reverse --repeats=3
"""


# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from savae_tf import distributions
from savae_tf import refine


flags.DEFINE_integer("batch", 32, "Sentences per batch.")
flags.DEFINE_integer("length", 20, "Tokens per sentence.")
flags.DEFINE_integer("hidden", 256, "Embedding and LSTM size.")
flags.DEFINE_integer("vocab", 1000, "Vocabulary size.")
flags.DEFINE_integer("latent", 32, "Latent size.")
flags.DEFINE_list("steps", ["0", "5", "10", "20"], "Values of K.")
flags.DEFINE_list("modes", ["unrolled", "reverse", "finite_difference", "none"], "Gradient modes.")
flags.DEFINE_integer("repeats", 5, "Timed calls per configuration (the median is reported).")
FLAGS = flags.FLAGS


class Decoder(keras.Model):
  """LSTM decoder: z concatenated to every input embedding, h_0 = W z."""

  def __init__(self, vocab, hidden):
    super().__init__()
    self.embed = keras.layers.Embedding(vocab, hidden)
    self.init_h = keras.layers.Dense(hidden)
    # Never cuDNN (no second-order gradient): the exact modes differentiate its gradient.
    self.lstm = keras.layers.LSTM(hidden, return_sequences=True, use_cudnn=False)
    self.out = keras.layers.Dense(vocab)

  def call(self, tokens, z):
    steps = tf.shape(tokens)[1]
    inputs = tf.concat([self.embed(tokens), tf.repeat(z[:, None], steps, axis=1)], -1)
    h0 = self.init_h(z)
    return self.out(self.lstm(inputs, initial_state=[h0, tf.zeros_like(h0)]))


def main(_):
  tf.config.threading.set_inter_op_parallelism_threads(2)
  rng = np.random.default_rng(0)
  tokens = tf.constant(rng.integers(0, FLAGS.vocab, (FLAGS.batch, FLAGS.length + 1)), tf.int32)
  mean0 = tf.constant(rng.normal(size=(FLAGS.batch, FLAGS.latent)) * 0.1, tf.float32)
  logvar0 = tf.constant(rng.normal(size=(FLAGS.batch, FLAGS.latent)) * 0.1, tf.float32)
  decoder = Decoder(FLAGS.vocab, FLAGS.hidden)
  decoder(tokens[:, :-1], mean0)

  def loss_fn(mean, logvar, step):
    z = distributions.sample(mean, logvar, distributions.step_seed([3, 4], step))
    logits = decoder(tokens[:, :-1], z)
    nll = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
        tokens[:, 1:], logits, from_logits=True), -1)
    return nll + distributions.kl_to_prior(mean, logvar)  # per example

  sources = [mean0, logvar0] + decoder.trainable_variables

  @tf.function
  def plain_gradient():
    with tf.GradientTape() as tape:
      tape.watch([mean0, logvar0])
      value = tf.reduce_mean(loss_fn(mean0, logvar0, tf.constant(0)))
    return tape.gradient(value, sources)

  def refined_gradient(mode, steps):
    @tf.function
    def call():
      with tf.GradientTape() as tape:
        tape.watch([mean0, logvar0])
        mean_k, logvar_k = refine(loss_fn, mean0, logvar0, steps, gradient=mode)
        value = tf.reduce_mean(loss_fn(mean_k, logvar_k, tf.constant(-1)))
      return tape.gradient(value, sources)
    return call

  base_time, base_mem = measure(plain_gradient, FLAGS.repeats)
  print(describe_machine())
  print(f"decoder: batch {FLAGS.batch}, length {FLAGS.length}, hidden {FLAGS.hidden}, "
        f"vocab {FLAGS.vocab}, latent {FLAGS.latent}")
  print(f"plain gradient: {base_time * 1e3:.1f} ms, peak {base_mem:.1f} MiB")
  print("| mode | K | ms per call | x plain gradient | peak MiB | x plain peak |")
  print("|---|---|---|---|---|---|")
  for mode in FLAGS.modes:
    for steps in [int(k) for k in FLAGS.steps]:
      seconds, mem = measure(refined_gradient(mode, tf.constant(steps)), FLAGS.repeats)
      mem_ratio = f"{mem / base_mem:.2f}" if base_mem > 0 else "-"
      print(f"| {mode} | {steps} | {seconds * 1e3:.0f} | {seconds / base_time:.1f} | "
            f"{mem:.1f} | {mem_ratio} |", flush=True)


if __name__ == "__main__":
  app.run(main)
