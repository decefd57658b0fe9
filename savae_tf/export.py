"""SavedModel export of a text model: raw sentences in, refinement inside the graph.

The contract (signatures, names, dtypes, edge cases) is written in export/README.md and held by
tests/test_export.py. `export(model, vocabulary, export_dir)` writes `<export_dir>/<version>/`.
"""

import os
import re
from typing import Optional

import tensorflow as tf

from savae_tf import decoding
from savae_tf import runs
from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE

_STRINGS = tf.TensorSpec([None], tf.string, name="sentences")
_INT = lambda name: tf.TensorSpec([], tf.int32, name=name)  # noqa: E731
_FLOAT = lambda name: tf.TensorSpec([], tf.float32, name=name)  # noqa: E731


class TextModelExport(tf.Module):
  """The exported signatures of a SemiAmortizedVAE over a Vocabulary.

  Why a tf.Module that tracks the variables, rather than the Keras model itself: a tf.Module
  holding a Keras 3 model whose `call` takes several arguments fails to save (the saver tries to
  trace the model's own call), and `keras.export.ExportArchive` would hide the lookup table and
  the string handling behind its own endpoint API. Here the functions close over the model's
  methods and the module tracks what they read: the variables and the vocabulary table.
  It tracks each Keras variable's underlying `tf.Variable` (`.value`): tracking the Keras wrapper
  saves a SavedModel that `tf.saved_model.load` restores but a session-based loader (TF Serving's
  C++ loader, `saved_model_cli run`) does not ("Could not find variable").
  """

  def __init__(self, model: SemiAmortizedVAE, vocabulary: Vocabulary):
    super().__init__(name="savae_text_model")
    self.model_variables = [v.value for v in model.variables]
    self.latent_dim = model.latent_dim
    self.vocab_words = tf.constant(vocabulary.words)
    self.word_ids = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(vocabulary.words, tf.range(len(vocabulary))), -1)
    unk, eos = vocabulary.unk_id, vocabulary.eos_id
    bos, pad = vocabulary.bos_id, vocabulary.pad_id

    def tokenize(sentences):
      """{"tokens": [B, T] `<s> w.. [</s>]` padded, "lengths": [B]}, with the contract's errors."""
      words = tf.strings.split(sentences)
      counts = tf.cast(words.row_lengths(), tf.int32)
      checks = [tf.debugging.assert_positive(
          counts, message="empty sentence: every sentence needs at least one word")]
      ids = self.word_ids.lookup(words)
      if unk is None:
        checks.append(tf.debugging.assert_non_negative(
            ids.flat_values, message="a word is not in the vocabulary, and this model's "
            "vocabulary has no <unk>"))
      else:
        ids = tf.ragged.map_flat_values(lambda v: tf.where(v < 0, unk, v), ids)
      with tf.control_dependencies(checks):
        ids = tf.cast(ids, tf.int32)
      parts = [tf.fill([tf.shape(sentences)[0], 1], bos), ids]
      if eos is not None:
        parts.append(tf.fill([tf.shape(sentences)[0], 1], eos))
      tokens = tf.concat(parts, axis=1).to_tensor(default_value=pad)
      return {"tokens": tokens, "lengths": counts + len(parts) - 1}

    def detokenize(tokens, lengths):
      """Sentences from generated tokens (without `<s>`), cut before `</s>`."""
      words_kept = lengths - (0 if eos is None else tf.cast(
          tf.reduce_any(tf.equal(tokens, eos), axis=1), tf.int32))
      kept = tf.RaggedTensor.from_tensor(tokens, lengths=words_kept)
      return tf.strings.reduce_join(tf.gather(self.vocab_words, kept), axis=-1, separator=" ")

    def latent(z):  # the LM's decoder takes no z
      return z if self.latent_dim else None

    def check_steps(steps):
      return tf.debugging.assert_non_negative(steps, message="steps must be >= 0")

    @tf.function(input_signature=[_STRINGS])
    def encode(sentences):
      data = tokenize(sentences)
      mean, logvar = model.initial_params(data["tokens"], data["lengths"])
      return {"mean": mean, "logvar": logvar}

    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[_STRINGS, latent_spec, latent_spec, _INT("steps")])
    def refine(sentences, mean, logvar, steps):
      data = tokenize(sentences)
      with tf.control_dependencies([check_steps(steps), tf.debugging.assert_equal(
          tf.shape(mean)[0], tf.shape(sentences)[0],
          message="mean and logvar need one row per sentence")]):
        mean_k, logvar_k = model.refine_for_evaluation(data, mean, logvar, steps)
      return {"mean": mean_k, "logvar": logvar_k}

    @tf.function(input_signature=[_STRINGS, _INT("steps"), _INT("num_samples")])
    def score(sentences, steps, num_samples):
      data = tokenize(sentences)
      with tf.control_dependencies([check_steps(steps), tf.debugging.assert_positive(
          num_samples, message="num_samples must be >= 1")]):
        out = model.score(data, steps, num_samples)
      return {"nll_bound": out["nll_bound"], "refined_nll_bound": out["refined_nll_bound"],
              "kl": out["kl"], "iw_nll": out["iw_nll"], "num_tokens": out["tokens"]}

    def decode(z, max_length, temperature, seed, batch_size=None):
      decoded = decoding.decode(model.decoder, latent(z), bos, max_length, temperature,
                                tf.stack([seed, 0]), eos, pad, batch_size)
      return decoded, detokenize(decoded.tokens, decoded.lengths)

    @tf.function(input_signature=[latent_spec, _INT("max_length"), _FLOAT("temperature"),
                                  _INT("seed")])
    def generate(z, max_length, temperature, seed):
      decoded, sentences = decode(z, max_length, temperature, seed, tf.shape(z)[0])
      return {"sentences": sentences, "tokens": decoded.tokens}

    @tf.function(input_signature=[_INT("num"), _INT("max_length"), _FLOAT("temperature"),
                                  _INT("seed")])
    def sample(num, max_length, temperature, seed):
      with tf.control_dependencies([tf.debugging.assert_non_negative(
          num, message="num must be >= 0")]):
        z = tf.random.stateless_normal([num, self.latent_dim], tf.stack([seed, 1]))
      _, sentences = decode(z, max_length, temperature, seed, num)
      return {"z": z, "sentences": sentences}

    @tf.function(input_signature=[_STRINGS, _INT("steps"), _INT("max_length")])
    def reconstruct(sentences, steps, max_length):
      data = tokenize(sentences)
      mean, logvar = model.initial_params(data["tokens"], data["lengths"])
      with tf.control_dependencies([check_steps(steps)]):
        mean, _ = model.refine_for_evaluation(data, mean, logvar, steps)
      _, out = decode(mean, max_length, 0.0, 0, tf.shape(sentences)[0])
      return {"sentences": out}

    self.encode, self.refine, self.score = encode, refine, score
    self.generate, self.sample, self.reconstruct = generate, sample, reconstruct

  def signatures(self):
    return {"serving_default": self.score, "score": self.score, "encode": self.encode,
            "refine": self.refine, "generate": self.generate, "sample": self.sample,
            "reconstruct": self.reconstruct}


def _versions(export_dir: str):
  if not os.path.isdir(export_dir):
    return []
  return [int(n) for n in os.listdir(export_dir) if re.fullmatch(r"\d+", n)]


def next_version(export_dir: str) -> int:
  """1 + the largest integer version directory under `export_dir` (TF Serving's layout)."""
  return max(_versions(export_dir), default=0) + 1


def latest_version(path: str) -> str:
  """`path` itself if it is a SavedModel, else its newest version directory holding one (as TF
  Serving picks), else `path` unchanged."""
  if tf.saved_model.contains_saved_model(path):
    return path
  for version in sorted(_versions(path), reverse=True):
    candidate = os.path.join(path, str(version))
    if tf.saved_model.contains_saved_model(candidate):
      return candidate
  return path


def export(model: SemiAmortizedVAE, vocabulary: Vocabulary, export_dir: str,
           version: Optional[int] = None) -> str:
  """Writes the SavedModel to `<export_dir>/<version>/` (default: the next version); returns it."""
  module = TextModelExport(model, vocabulary)
  path = os.path.join(export_dir, str(version or next_version(export_dir)))
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; export versions are never overwritten.")
  tf.saved_model.save(module, path, signatures=module.signatures())
  return path


def error_message(error: tf.errors.OpError) -> str:
  """The contract's message inside a failed call ("empty sentence: ..."), without the graph
  execution noise around it."""
  found = re.search(r"assertion failed: \[([^\]]*)\]", error.message)
  text = found.group(1) if found else error.message.strip().splitlines()[-1]
  return text.replace("\\'", "'").strip()


def load_signatures(path: str):
  """{name: function} of the contract's signatures, from a SavedModel directory or an export
  directory of versions (the newest; no code of ours runs), or from a model directory saved by
  `runs.save_model` (built in memory)."""
  path = latest_version(path)
  if tf.saved_model.contains_saved_model(path):
    return tf.saved_model.load(path).signatures
  return TextModelExport(*runs.load_model(path)).signatures()
