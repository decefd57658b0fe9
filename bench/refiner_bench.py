"""Benchmark: the learned refiner's cost against SGD's, per K, on the synthetic experiment's
SA-VAE (the oracle generator, an LSTM encoder of 100 units, batch 32, sequences of 5 tokens).

For each K: the median time of one training step (`train_step` compiled; SA-VAE's gradient
through the K steps: `unrolled` for both, the mode the learned refiner always uses) and of one
test-time refinement of the batch (`refine_for_evaluation`, gradient stopped), each as a ratio of
the learned refiner's to SGD's, measured in the same run.

  python bench/refiner_bench.py                       # the table in BENCHMARKS.md
  python bench/refiner_bench.py --steps=1,5,20 --units=64
"""

# bench/timing.py, imported first: it configures TensorFlow.
from timing import describe_machine, measure

from absl import app
from absl import flags
import keras
import tensorflow as tf

from savae_tf.data import synthetic
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMEncoder
from savae_tf.refiners import LearnedRefiner

flags.DEFINE_list("steps", ["1", "5", "20"], "Values of K.")
flags.DEFINE_integer("units", 64, "The learned refiner's hidden units.")
flags.DEFINE_integer("encoder_units", 100, "The encoder's LSTM and embedding size.")
flags.DEFINE_integer("batch", 32, "Sequences per batch.")
flags.DEFINE_integer("repeats", 20, "Timed calls per configuration (median reported).")
FLAGS = flags.FLAGS


def model_for(oracle, steps, learned):
  keras.utils.set_random_seed(0)
  model = SemiAmortizedVAE(
      oracle, LSTMEncoder(oracle.vocab_size + 1, FLAGS.encoder_units, FLAGS.encoder_units,
                          oracle.latent_dim),
      mode="savae", latent_dim=oracle.latent_dim,
      svi_config=SVIConfig(steps=steps, gradient="unrolled"),
      refiner=LearnedRefiner(oracle.latent_dim, FLAGS.units) if learned else None)
  model.compile(optimizer=keras.optimizers.Adam(1e-3))
  return model


def main(_):
  print(describe_machine())
  data = synthetic.make_synthetic_data(3435, num_train=FLAGS.batch, num_valid=1, num_test=1)
  tokens = data.splits["train"]["tokens"][:FLAGS.batch]
  batch = {"tokens": tf.constant(tokens), "lengths": tf.fill([len(tokens)], tokens.shape[1])}
  print("| K | refiner | training step (ms) | test-time refinement (ms) |")
  print("|---|---|---|---|")
  for steps in map(int, FLAGS.steps):
    times = {}
    for learned in (False, True):
      model = model_for(data.oracle, steps, learned)
      train = tf.function(model.train_step)
      mean0, logvar0 = model.initial_params(model.observe(batch))
      refine = tf.function(lambda: model.refine_for_evaluation(batch, mean0, logvar0, steps))
      times[learned] = (measure(lambda: train(batch), FLAGS.repeats)[0],  # pylint: disable=cell-var-from-loop
                        measure(refine, FLAGS.repeats)[0])
      print(f"| {steps} | {'learned' if learned else 'sgd'} | {1e3 * times[learned][0]:.1f} | "
            f"{1e3 * times[learned][1]:.1f} |", flush=True)
    print(f"| {steps} | learned / sgd | {times[True][0] / times[False][0]:.2f}x | "
          f"{times[True][1] / times[False][1]:.2f}x |", flush=True)


if __name__ == "__main__":
  app.run(main)
