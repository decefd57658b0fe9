"""Sentences from a trained model: prior samples, reconstructions, interpolations.

  python bin/generate.py --model_dir=export/synthetic/learned-savae/1 --num=5
  python bin/generate.py --model_dir=runs/synthetic/learned-savae --reconstruct="w1 w2 w3 w4 w5"
  python bin/generate.py --model_dir=... --sentences_file=in.txt          # reconstruct each line
  python bin/generate.py --model_dir=... --interpolate="w1 w2 w3|w9 w8 w7" --interpolation_steps=5
  python bin/generate.py --model_dir=... --num=5 --beam_size=5     # the most probable sentence at z

--model_dir is a SavedModel directory, an export directory of versions (the newest is used) or a
model directory. Reconstructions decode greedily from the refined posterior mean (K = --svi_steps)
and print each input's `score` (nll_bound, refined_nll_bound, iw_nll, kl); interpolations decode along the line between two
sentences' refined means; prior samples use --temperature (0 = greedy). With --beam_size > 1 each
of the three prints instead the best of a beam search at its z (the most probable sentence the
beam finds, with its log-probability).
"""

import os
import sys

# TensorFlow's INFO and WARNING logs off; savae_tf, imported before TensorFlow, also hides the
# start-up lines TensorFlow prints regardless (savae_tf.console).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import savae_tf  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from savae_tf import domains
from savae_tf import export
from savae_tf import flags as savae_flags
from savae_tf.data import text

savae_flags.define_seed_flag()
savae_flags.define_device_flags()
flags.adopt_module_key_flags(savae_flags)  # list the shared flags in --help
flags.DEFINE_string("model_dir", None, "A SavedModel directory, an export directory of versions, "
                    "or a model directory written by a training binary.", required=True)
flags.DEFINE_integer("num", 0, "Sentences to sample from the prior.", lower_bound=0)
flags.DEFINE_multi_string("reconstruct", [], "A sentence to reconstruct (repeatable).")
flags.DEFINE_string("sentences_file", None, "Reconstruct every line of this file.")
flags.DEFINE_string("interpolate", None, "Two sentences separated by '|'.")
flags.DEFINE_integer("interpolation_steps", 5, "Points on the line, ends included.",
                     lower_bound=2)
flags.DEFINE_integer("svi_steps", 20, "Refinement steps K before decoding.", lower_bound=0)
flags.DEFINE_integer("score_samples", 500, "Importance samples for the inputs' iw_nll.",
                     lower_bound=1)
flags.DEFINE_integer("max_length", 0, "Tokens to generate at most; 0: the model's own (its "
                     "training data's longest sentence).", lower_bound=0)
flags.DEFINE_float("temperature", 1.0, "Sampling temperature for prior samples; 0 is greedy.",
                   lower_bound=0.0)
flags.DEFINE_integer("beam_size", 1, "Beam width; > 1 decodes every z by beam search instead of "
                     "sampling or greedy decoding.", lower_bound=1)
FLAGS = flags.FLAGS


def refined_means(signatures, sentences):
  batch = tf.constant(sentences)
  encoded = signatures["encode"](sentences=batch)
  return signatures["refine"](sentences=batch, mean=encoded["mean"], logvar=encoded["logvar"],
                              steps=tf.constant(FLAGS.svi_steps))["mean"]


def decode(strings):
  return [s.decode("utf-8") for s in strings.numpy()]


def beam_decode(signatures, z):
  """The best sentence of a beam of --beam_size at each z, with its log-probability."""
  out = signatures["beam_search"](z=tf.convert_to_tensor(z), max_length=tf.constant(
      FLAGS.max_length), beam_size=tf.constant(FLAGS.beam_size))
  return [f"{sentence}  (log p {log_p:.2f})" for sentence, log_p in
          zip(decode(out["sentences"][:, 0]), out["log_probs"][:, 0].numpy())]


def decoding_name():
  return f"beam of {FLAGS.beam_size}" if FLAGS.beam_size > 1 else "greedy"


def main(_):
  to_reconstruct = list(FLAGS.reconstruct)
  if FLAGS.sentences_file:
    try:
      to_reconstruct += text.read_sentences(FLAGS.sentences_file)
    except text.DataError as error:
      raise app.UsageError(str(error)) from None
  pair = None
  if FLAGS.interpolate is not None:
    pair = [part.strip() for part in FLAGS.interpolate.split("|")]
    if len(pair) != 2 or not all(pair):
      raise app.UsageError("--interpolate needs two non-empty sentences separated by '|'.")
  if not (FLAGS.num or to_reconstruct or pair):
    raise app.UsageError("Nothing to do: give --num, --reconstruct, --sentences_file or "
                         "--interpolate.")
  try:
    signatures = export.load_signatures(FLAGS.model_dir)
  except (FileNotFoundError, ValueError) as error:
    raise app.UsageError(str(error)) from None
  if domains.of_signatures(signatures).input_name != "sentences":
    raise app.UsageError(f"{FLAGS.model_dir} is an image model; this binary handles sentences. "
                         "bin/train_images.py draws its pictures, and its SavedModel's signatures "
                         "take images (export/README.md).")
  length = tf.constant(FLAGS.max_length)
  try:
    if FLAGS.num:
      out = signatures["sample"](num=tf.constant(FLAGS.num), max_length=length,
                                 temperature=tf.constant(FLAGS.temperature),
                                 seed=tf.constant(FLAGS.seed))
      sentences = decode(out["sentences"])
      if FLAGS.beam_size > 1:
        print(f"== {FLAGS.num} prior draws of z, each decoded by a beam of {FLAGS.beam_size}")
        sentences = beam_decode(signatures, out["z"])
      else:
        print(f"== {FLAGS.num} samples from the prior")
      for sentence in sentences:
        print(sentence)
    if to_reconstruct:
      batch, steps = tf.constant(to_reconstruct), tf.constant(FLAGS.svi_steps)
      if FLAGS.beam_size > 1:
        decoded = beam_decode(signatures, refined_means(signatures, to_reconstruct))
      else:
        decoded = decode(signatures["reconstruct"](sentences=batch, steps=steps,
                                                   max_length=length)["sentences"])
      scores = signatures["score"](sentences=batch, steps=steps,
                                   num_samples=tf.constant(FLAGS.score_samples))
      print(f"== reconstructions (K = {FLAGS.svi_steps}, {decoding_name()}), with each input's "
            "score")
      for i, (source, sentence) in enumerate(zip(to_reconstruct, decoded)):
        print(f"{source}\n  -> {sentence}\n  nll_bound {scores['nll_bound'][i]:.2f}, "
              f"refined_nll_bound {scores['refined_nll_bound'][i]:.2f}, iw_nll "
              f"{scores['iw_nll'][i]:.2f} ({FLAGS.score_samples} samples), kl "
              f"{scores['kl'][i]:.2f}")
    if pair:
      ends = refined_means(signatures, pair).numpy()
      weights = np.linspace(0.0, 1.0, FLAGS.interpolation_steps)[:, None]
      z = tf.constant((1 - weights) * ends[0] + weights * ends[1], tf.float32)
      if FLAGS.beam_size > 1:
        decoded = beam_decode(signatures, z)
      else:
        decoded = decode(signatures["generate"](z=z, max_length=length,
                                                temperature=tf.constant(0.0),
                                                seed=tf.constant(FLAGS.seed))["sentences"])
      print(f"== interpolation ({decoding_name()}): {pair[0]}  ->  {pair[1]}")
      for weight, sentence in zip(weights[:, 0], decoded):
        print(f"{weight:.2f}  {sentence}")
  except tf.errors.InvalidArgumentError as error:
    sys.exit(f"error: the model rejected the input: {export.error_message(error)}")


if __name__ == "__main__":
  savae_flags.run(main)
