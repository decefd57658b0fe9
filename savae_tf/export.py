"""SavedModel export: raw sentences or images in, refinement inside the graph.

The contract (signatures, names, dtypes, edge cases) is written in export/README.md and held by
tests/test_export.py and tests/test_export_images.py. `export(model, vocabulary, export_dir)`
writes `<export_dir>/<version>/`: the signatures (for TF Serving) and, beside each, a one-dict
endpoint `<name>_dict` (for Keras' `TFSMLayer`).
"""

import logging
import os
import re
from typing import Optional

from absl import logging as absl_logging
import tensorflow as tf

from savae_tf import decoding
from savae_tf import devices
from savae_tf import distributions
from savae_tf import runs
from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE

_STRINGS = tf.TensorSpec([None], tf.string, name="sentences")
# Any rank, so that a wrong shape reaches the in-graph check and its message.
_IMAGES = tf.TensorSpec(None, tf.float32, name="images")
_INT = lambda name: tf.TensorSpec([], tf.int32, name=name)  # noqa: E731
_FLOAT = lambda name: tf.TensorSpec([], tf.float32, name=name)  # noqa: E731


def _taking_one_dict(function):
  """`function` (a tf.function with an input signature) called with one dict of its inputs."""
  # The concrete function names every input as its signature does: the TensorSpec's name, else
  # the argument's. Tracing here costs nothing more: saving traces every signature anyway.
  specs, _ = function.get_concrete_function().structured_input_signature
  names = [spec.name for spec in specs]

  @tf.function(input_signature=[{spec.name: spec for spec in specs}])
  def call(inputs):
    return function(*[inputs[name] for name in names])

  return call


def _check_steps(steps):
  return tf.debugging.assert_non_negative(steps, message="steps must be >= 0")


class ModelExport(tf.Module):
  """The signatures every exported SemiAmortizedVAE has: `encode`, `refine`, `score`.

  Subclasses say how raw inputs become a batch (`read`, with the contract's errors) and add their
  domain's generation signatures. Why a tf.Module that tracks the variables, rather than the Keras
  model itself: a tf.Module holding a Keras 3 model whose `call` takes several arguments fails to
  save (the saver tries to trace the model's own call), and `keras.export.ExportArchive` would hide
  the lookup table and the string handling behind its own endpoint API. Here the functions close
  over the model's methods and the module tracks what they read. It tracks each Keras variable's
  underlying `tf.Variable` (`.value`): tracking the Keras wrapper saves a SavedModel that
  `tf.saved_model.load` restores but a session-based loader (TF Serving's C++ loader,
  `saved_model_cli run`) does not ("Could not find variable").
  """

  def __init__(self, model: SemiAmortizedVAE, input_spec: tf.TensorSpec, name: str):
    super().__init__(name=name)
    self._hold_untracked(model)
    self.model_variables = [v.value for v in model.variables]
    self.latent_dim = model.latent_dim
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[input_spec])
    def encode(inputs):
      data = self.read(inputs)
      mean, logvar = model.initial_params(model.observe(data))
      return {"mean": mean, "logvar": logvar}

    @tf.function(input_signature=[input_spec, latent_spec, latent_spec, _INT("steps")])
    def refine(inputs, mean, logvar, steps):
      data = self.read(inputs)
      with tf.control_dependencies([_check_steps(steps), tf.debugging.assert_equal(
          tf.shape(mean)[0], tf.shape(inputs)[0],
          message=f"mean and logvar need one row per {input_spec.name[:-1]}")]):
        mean_k, logvar_k = model.refine_for_evaluation(data, mean, logvar, steps)
      return {"mean": mean_k, "logvar": logvar_k}

    @tf.function(input_signature=[input_spec, _INT("steps"), _INT("num_samples")])
    def score(inputs, steps, num_samples):
      data = self.read(inputs)
      with tf.control_dependencies([_check_steps(steps), tf.debugging.assert_positive(
          num_samples, message="num_samples must be >= 1")]):
        out = model.score(data, steps, num_samples)
      return self.score_outputs(out)

    self.encode, self.refine, self.score = encode, refine, score

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def _hold_untracked(self, model):
    """Keeps the Keras model for the helpers below without making it a saved dependency."""
    self.model = model

  def read(self, inputs):
    """The raw signature input as a model batch, with the contract's checks."""
    raise NotImplementedError

  def score_outputs(self, out):
    batch = tf.shape(out["nll_bound"])[0]
    empty = tf.zeros([batch, 0])  # the language model has no latent
    return {"nll_bound": out["nll_bound"], "refined_nll_bound": out["refined_nll_bound"],
            "kl": out["kl"], "iw_nll": out["iw_nll"], "mean": out.get("mean", empty),
            "logvar": out.get("logvar", empty), "z": out.get("z", empty),
            "mean0": out.get("mean0", empty), "logvar0": out.get("logvar0", empty),
            "z0": out.get("z0", empty)}

  def refined_mean(self, inputs, steps):
    """The posterior mean after `steps` refinement steps from the encoder's proposal."""
    data = self.read(inputs)
    mean, logvar = self.model.initial_params(self.model.observe(data))
    with tf.control_dependencies([_check_steps(steps)]):
      return self.model.refine_for_evaluation(data, mean, logvar, steps).mean

  def prior_sample(self, num, seed):
    with tf.control_dependencies([tf.debugging.assert_non_negative(
        num, message="num must be >= 0")]):
      return tf.random.stateless_normal([num, self.latent_dim], tf.stack([seed, 1]))

  def extra_signatures(self):
    """The signatures only this data kind has."""
    return {}

  def latent(self, z):  # decoders without a latent take no z
    return z if self.latent_dim else None

  def functions(self):
    """{signature name: its tf.function}, without the `serving_default` alias of `score`."""
    return {"score": self.score, "encode": self.encode, "refine": self.refine,
            "generate": self.generate, "sample": self.sample, "reconstruct": self.reconstruct,
            **self.extra_signatures()}

  def signatures(self):
    """{name: concrete function}; in memory they take the same keyword inputs as when loaded."""
    concrete = {name: f.get_concrete_function() for name, f in self.functions().items()}
    return {"serving_default": concrete["score"], **concrete}

  def add_dict_endpoints(self):
    """Sets `<name>_dict` beside every signature: the same function taking one dict.

    Keras' `TFSMLayer` calls its endpoint with a single input structure, which a signature's
    several keyword arguments cannot take. Each one-dict endpoint is keyed exactly as its
    signature's inputs, so a request is the same dict either way. `export` adds them: only a
    saved module needs them.
    """
    for name, function in self.functions().items():
      setattr(self, name + "_dict", _taking_one_dict(function))


# Generation's length for max_length 0 when a model recorded none (saved before it did).
DEFAULT_GENERATION_LENGTH = 30


class TextModelExport(ModelExport):
  """Sentences (whitespace-tokenized strings) in; the vocabulary travels as a lookup table."""

  def __init__(self, model: SemiAmortizedVAE, vocabulary: Vocabulary):
    self.vocab_words = tf.constant(vocabulary.words)
    self.word_ids = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(vocabulary.words, tf.range(len(vocabulary))), -1)
    self.unk, self.eos = vocabulary.unk_id, vocabulary.eos_id
    self.bos, self.pad = vocabulary.bos_id, vocabulary.pad_id
    # What max_length 0 asks for: the training data's longest sequence, as the model recorded.
    self.default_length = model.generation_length or DEFAULT_GENERATION_LENGTH
    super().__init__(model, _STRINGS, "savae_text_model")
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[latent_spec, _INT("max_length"), _FLOAT("temperature"),
                                  _INT("seed")])
    def generate(z, max_length, temperature, seed):
      decoded, sentences = self.decode(z, max_length, temperature, seed, tf.shape(z)[0])
      return {"sentences": sentences, "tokens": decoded.tokens}

    @tf.function(input_signature=[_INT("num"), _INT("max_length"), _FLOAT("temperature"),
                                  _INT("seed")])
    def sample(num, max_length, temperature, seed):
      z = self.prior_sample(num, seed)
      _, sentences = self.decode(z, max_length, temperature, seed, num)
      return {"z": z, "sentences": sentences}

    @tf.function(input_signature=[_STRINGS, _INT("steps"), _INT("max_length")])
    def reconstruct(sentences, steps, max_length):
      mean = self.refined_mean(sentences, steps)
      _, out = self.decode(mean, max_length, 0.0, 0, tf.shape(sentences)[0])
      return {"sentences": out}

    @tf.function(input_signature=[latent_spec, _INT("max_length"), _INT("beam_size")])
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


class ImageModelExport(ModelExport):
  """Images float32 [B, height, width, 1] with values in [0, 1] in; binary images out."""

  def __init__(self, model: SemiAmortizedVAE):
    self.image_shape = tuple(model.decoder.image_shape)
    super().__init__(model, _IMAGES, "savae_image_model")
    latent_spec = tf.TensorSpec([None, self.latent_dim], tf.float32)

    @tf.function(input_signature=[latent_spec, _INT("seed")])
    def generate(z, seed):
      return self.draw(z, seed, tf.shape(z)[0])

    @tf.function(input_signature=[_INT("num"), _INT("seed")])
    def sample(num, seed):
      z = self.prior_sample(num, seed)
      return {"z": z, **self.draw(z, seed, num)}

    @tf.function(input_signature=[_IMAGES, _INT("steps"), _INT("seed")])
    def reconstruct(images, steps, seed):
      # Pixel noise keyed by (seed, the input image), so a row does not depend on its batch.
      keys = model.observe(self.read(images)).example_seeds(seed)
      return self.draw(self.refined_mean(images, steps), keys, tf.shape(images)[0])

    self.generate, self.sample, self.reconstruct = generate, sample, reconstruct

  def read(self, inputs):
    height, width = self.image_shape
    # One check over rank and sizes (padding the shape keeps it valid at any rank).
    sizes = tf.pad(tf.shape(inputs), [[0, 4]])[1:4]
    shape_ok = tf.logical_and(tf.equal(tf.rank(inputs), 4),
                              tf.reduce_all(tf.equal(sizes, [height, width, 1])))
    in_range = tf.reduce_all((inputs >= 0.0) & (inputs <= 1.0))  # False for NaN too
    checks = [tf.debugging.Assert(shape_ok, [f"images must be float32[B, {height}, {width}, 1]"]),
              tf.debugging.Assert(in_range, ["image values must lie in [0, 1] (NaN is not "
                                             "allowed)"])]
    with tf.control_dependencies(checks):
      images = tf.ensure_shape(tf.identity(inputs), [None, height, width, 1])
    return {"images": images}

  def draw(self, z, seed, batch_size):
    """Images drawn at z; `seed` an int32 scalar (noise by position) or `ExampleSeeds`."""
    if not isinstance(seed, distributions.ExampleSeeds):
      seed = tf.stack([seed, 0])
    means, images = decoding.sample_images(self.model.decoder, self.latent(z), seed, batch_size)
    return {"means": means, "images": images}


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


def model_export(model: SemiAmortizedVAE, vocabulary: Optional[Vocabulary]) -> ModelExport:
  """The export module of a text model (with its vocabulary) or an image model (without)."""
  if model.decoder.data_kind == "images":
    return ImageModelExport(model)
  return TextModelExport(model, vocabulary)


def export(model: SemiAmortizedVAE, vocabulary: Optional[Vocabulary], export_dir: str,
           version: Optional[int] = None) -> str:
  """Writes the SavedModel to `<export_dir>/<version>/` (default: the next version); returns it.
  `vocabulary` is the text model's, None for an image model.

  Traced portably (`devices.portable`): whatever device this runs on, the graphs hold no GPU-only
  kernel (cuDNN's LSTM) and no XLA cluster, so a model trained on a GPU serves on a CPU."""
  path = os.path.join(export_dir, str(version or next_version(export_dir)))
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; export versions are never overwritten.")
  with devices.portable():
    module = model_export(model, vocabulary)
    module.add_dict_endpoints()
    tf.saved_model.save(module, path, signatures=module.signatures())
  return path


def error_message(error: tf.errors.OpError) -> str:
  """The contract's message inside a failed call ("empty sentence: ..."), without the graph
  execution noise around it."""
  found = re.search(r"assertion failed: \[(.*?)\](?: \[|\s*$)", error.message, re.MULTILINE)
  text = found.group(1) if found else error.message.strip().splitlines()[-1]
  return text.replace("\\'", "'").strip()


def takes_images(signatures) -> bool:
  """Whether exported signatures are an image model's (their `encode` takes `images`)."""
  specs = tf.nest.flatten(signatures["encode"].structured_input_signature)
  return any(getattr(spec, "name", None) == "images" for spec in specs)


class _UnsavedGradientWarnings(logging.Filter):
  """Drops TensorFlow's warning, once per refinement function, that a loaded function has ops
  with custom gradients: the signatures compute their own gradients inside and are called for
  their outputs only."""

  def filter(self, record):
    return "with ops with unsaved custom gradients" not in record.getMessage()


def load_signatures(path: str):
  """{name: function} of the contract's signatures, from a SavedModel directory or an export
  directory of versions (the newest; no code of ours runs), or from a model directory saved by
  `runs.save_model` (built in memory)."""
  path = latest_version(path)
  if tf.saved_model.contains_saved_model(path):
    quiet = _UnsavedGradientWarnings()
    absl_logging.get_absl_logger().addFilter(quiet)  # where the loader logs it
    try:
      return tf.saved_model.load(path).signatures
    finally:
      absl_logging.get_absl_logger().removeFilter(quiet)
  return model_export(*runs.load_model(path)).signatures()
