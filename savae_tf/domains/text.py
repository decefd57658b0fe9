"""Text: sentences of tokens, a categorical likelihood per token, perplexity, a vocabulary.

Batches are {"tokens": int32 [batch, time] `<s> w_1 .. w_n </s>` padded, "lengths": int32
[batch]}; the decoder predicts tokens 1..n+1, so `</s>` counts as a predicted token (in perplexity)
and `<s>` does not.
"""

import os
from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

from savae_tf import decoding
from savae_tf import objectives
from savae_tf import signatures
from savae_tf.data.text import Vocabulary
from savae_tf.domains.base import Domain, Observation

VOCAB = "vocab.json"


class TextObservation(Observation):
  """Targets tokens[:, 1:] with their mask; the encoder reads (tokens, lengths)."""

  def nll(self, logits):
    """Categorical -log p(x | z) summed over the masked tokens."""
    return objectives.token_nll(logits, self.targets, self.mask)

  def units(self):
    return tf.reduce_sum(tf.cast(self.mask, tf.int32), -1)


class TextDomain(Domain):
  """Sentences; perplexity per predicted token; the vocabulary saved beside the weights."""
  name = "text"
  input_name = "sentences"
  svi_lr = 0.1  # Penn Treebank's validation, of 0.01 / 0.03 / 0.1 (RESULTS.md)

  def observe(self, data):
    if "tokens" not in data or "lengths" not in data:
      raise ValueError(f"A text model needs batches {{'tokens', 'lengths'}}; got keys "
                       f"{sorted(data)}.")
    tokens, lengths = data["tokens"], data["lengths"]
    targets = tokens[:, 1:]
    # Every token but <s>, which is the same in every sentence, is a target.
    mask = objectives.target_mask(lengths, tf.shape(targets)[1])
    return TextObservation((tokens, lengths), tokens, targets, mask, targets)

  def unit_metrics(self, rows: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """`ppl_bound` (of the refined bound where there is one) and `ppl` (of `iw_nll`), per
    predicted token."""
    tokens = max(float(np.sum(rows["tokens"], dtype=np.float64)), 1.0)
    bound = rows.get("refined_nll_bound", rows["nll_bound"])
    result = {"ppl_bound": float(np.exp(np.sum(bound, dtype=np.float64) / tokens))}
    if "iw_nll" in rows:
      result["ppl"] = float(np.exp(np.sum(rows["iw_nll"], dtype=np.float64) / tokens))
    return result

  def save_artefacts(self, artefacts, model_dir):
    if not isinstance(artefacts, Vocabulary):
      raise ValueError(f"A {self.name} model is saved with its vocabulary; got {artefacts!r}.")
    artefacts.save(os.path.join(model_dir, VOCAB))

  def load_artefacts(self, model, model_dir):
    path = os.path.join(model_dir, VOCAB)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{model_dir!r} is not a saved model directory: no {VOCAB}.")
    vocabulary = Vocabulary.load(path)
    # Input-only ids beyond the decoder's output vocabulary (the synthetic start token).
    expected = model.decoder.vocab_size + getattr(model.decoder, "input_only_ids", 0)
    if len(vocabulary) != expected:
      raise ValueError(f"{model_dir!r}: {VOCAB} has {len(vocabulary)} words but the model was "
                       f"built for {expected}.")
    return vocabulary

  def export_module(self, model, artefacts):
    return TextModelExport(model, artefacts)

  def posterior_colour(self, rows):
    return rows["tokens"], "tokens in the sentence"


# Generation's length for max_length 0 when a model recorded none (saved before it did).
DEFAULT_GENERATION_LENGTH = 30


class TextModelExport(signatures.ModelExport):
  """Sentences (whitespace-tokenized strings) in; the vocabulary travels as a lookup table."""

  def __init__(self, model, vocabulary: Vocabulary):
    self.vocab_words = tf.constant(vocabulary.words)
    self.word_ids = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(vocabulary.words, tf.range(len(vocabulary))), -1)
    self.unk, self.eos = vocabulary.unk_id, vocabulary.eos_id
    self.bos, self.pad = vocabulary.bos_id, vocabulary.pad_id
    # What max_length 0 asks for: the training data's longest sequence, as the model recorded.
    self.default_length = model.generation_length or DEFAULT_GENERATION_LENGTH
    super().__init__(model, signatures.STRINGS, "savae_text_model")
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[latent_spec, signatures.INT("max_length"), signatures.FLOAT("temperature"),
                                  signatures.INT("seed")], autograph=False)
    def generate(z, max_length, temperature, seed):
      decoded, sentences = self.decode(z, max_length, temperature, seed, tf.shape(z)[0])
      return {"sentences": sentences, "tokens": decoded.tokens}

    @tf.function(input_signature=[signatures.INT("num"), signatures.INT("max_length"), signatures.FLOAT("temperature"),
                                  signatures.INT("seed")], autograph=False)
    def sample(num, max_length, temperature, seed):
      z = self.prior_sample(num, seed)
      _, sentences = self.decode(z, max_length, temperature, seed, num)
      return {"z": z, "sentences": sentences}

    @tf.function(input_signature=[signatures.STRINGS, signatures.INT("steps"), signatures.INT("max_length")],
                 autograph=False)
    def reconstruct(sentences, steps, max_length):
      mean = self.refined_mean(sentences, steps)
      _, out = self.decode(mean, max_length, 0.0, 0, tf.shape(sentences)[0])
      return {"sentences": out}

    @tf.function(input_signature=[latent_spec, signatures.INT("max_length"), signatures.INT("beam_size")],
                 autograph=False)
    def beam_search(z, max_length, beam_size):
      beams = decoding.beam_search(self.model.decoder, self.latent(z), self.bos, self.eos,
                                   self.length(max_length), beam_size, self.pad, tf.shape(z)[0])
      batch, length = tf.shape(beams.tokens)[0], tf.shape(beams.tokens)[2]
      sentences = self.spell(tf.reshape(beams.tokens, [-1, length]),
                             tf.reshape(beams.lengths, [-1]))
      return {"sentences": tf.reshape(sentences, [batch, beam_size]), "tokens": beams.tokens,
              "log_probs": beams.log_probs}

    self.generate, self.sample, self.reconstruct = generate, sample, reconstruct
    self.beam_search = beam_search

  def extra_signatures(self):
    return {"beam_search": self.beam_search}

  def read(self, inputs):
    """{"tokens": [B, T] `<s> w.. [</s>]` padded, "lengths": [B]}, with the contract's errors."""
    words = tf.strings.split(inputs)
    counts = tf.cast(words.row_lengths(), tf.int32)
    checks = [tf.debugging.assert_positive(
        counts, message="empty sentence: every sentence needs at least one word")]
    ids = self.word_ids.lookup(words)
    if self.unk is None:
      checks.append(tf.debugging.assert_non_negative(
          ids.flat_values, message="a word is not in the vocabulary, and this model's "
          "vocabulary has no <unk>"))
    else:
      ids = tf.ragged.map_flat_values(lambda v: tf.where(v < 0, self.unk, v), ids)
    with tf.control_dependencies(checks):
      ids = tf.cast(ids, tf.int32)
    parts = [tf.fill([tf.shape(inputs)[0], 1], self.bos), ids]
    if self.eos is not None:
      parts.append(tf.fill([tf.shape(inputs)[0], 1], self.eos))
    tokens = tf.concat(parts, axis=1).to_tensor(default_value=self.pad)
    return {"tokens": tokens, "lengths": counts + len(parts) - 1}

  def score_outputs(self, out):
    return {**super().score_outputs(out), "num_tokens": out["tokens"]}

  def length(self, max_length):
    """`max_length`, or the model's own length where it is 0 (< 0 stays, for the check)."""
    return tf.where(tf.equal(max_length, 0), self.default_length, max_length)

  def decode(self, z, max_length, temperature, seed, batch_size):
    """Tokens drawn from p(x | z) and the sentences they spell (cut before `</s>`); max_length
    0 is the model's own length (`length`)."""
    max_length = self.length(max_length)
    decoded = decoding.decode(self.model.decoder, self.latent(z), self.bos, max_length,
                              temperature, tf.stack([seed, 0]), self.eos, self.pad, batch_size)
    return decoded, self.spell(decoded.tokens, decoded.lengths)

  def spell(self, tokens, lengths):
    """The sentences that tokens [B, L] (lengths [B], `</s>` included) spell, cut before `</s>`."""
    words_kept = lengths - (0 if self.eos is None else tf.cast(
        tf.reduce_any(tf.equal(tokens, self.eos), axis=1), tf.int32))
    kept = tf.RaggedTensor.from_tensor(tokens, lengths=words_kept)
    return tf.strings.reduce_join(tf.gather(self.vocab_words, kept), axis=-1, separator=" ")

