"""A trained model on disk, as the training binaries leave it and the other binaries load it.

    <model_dir>/config.json      SemiAmortizedVAE.get_config() (encoder and decoder included)
    <model_dir>/vocab.json       the Vocabulary
    <model_dir>/weights/model-*  a tf.train.Checkpoint of the model's variables
    <model_dir>/metrics.json     what the run measured (written by the binary)
"""

import json
import os
from typing import Tuple

import tensorflow as tf

from savae_tf.data.text import Vocabulary
from savae_tf.model import SemiAmortizedVAE
# Imported for their side effect: registering the layer classes that configs name.
from savae_tf.networks import synthetic as _synthetic  # noqa: F401  pylint: disable=unused-import
from savae_tf.networks import text as _text  # noqa: F401  pylint: disable=unused-import

CONFIG, VOCAB, WEIGHTS = "config.json", "vocab.json", "weights"


def save_model(model: SemiAmortizedVAE, vocabulary: Vocabulary, model_dir: str) -> str:
  """Writes the model's config, vocabulary and weights into `model_dir`; returns the directory."""
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, CONFIG), "w") as f:
    json.dump(model.get_config(), f, indent=2)
  vocabulary.save(os.path.join(model_dir, VOCAB))
  _checkpoint(model).write(os.path.join(model_dir, WEIGHTS, "model"))
  return model_dir


def load_model(model_dir: str) -> Tuple[SemiAmortizedVAE, Vocabulary]:
  """The model and vocabulary saved by `save_model`, with clear errors for a wrong directory."""
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"Model directory {model_dir!r} does not exist.")
  for name in (CONFIG, VOCAB):
    if not os.path.isfile(os.path.join(model_dir, name)):
      raise FileNotFoundError(f"{model_dir!r} is not a saved model directory: no {name}.")
  with open(os.path.join(model_dir, CONFIG)) as f:
    model = SemiAmortizedVAE.from_config(json.load(f))
  vocabulary = Vocabulary.load(os.path.join(model_dir, VOCAB))
  if len(vocabulary) != model.decoder.vocab_size + _extra_input_ids(model):
    raise ValueError(f"{model_dir!r}: vocab.json has {len(vocabulary)} words but the model was "
                     f"built for {model.decoder.vocab_size + _extra_input_ids(model)}.")
  prefix = os.path.join(model_dir, WEIGHTS, "model")
  if not tf.io.gfile.exists(prefix + ".index"):
    raise FileNotFoundError(f"{model_dir!r} has no weights ({prefix}.index).")
  _checkpoint(model).read(prefix).assert_existing_objects_matched()
  return model, vocabulary


def _checkpoint(model):
  """The networks' variables by attribute path (no optimizer or metric state)."""
  networks = {"decoder": model.decoder, "encoder": model.encoder}
  return tf.train.Checkpoint(**{name: net for name, net in networks.items() if net is not None})


def _extra_input_ids(model) -> int:
  """Input-only ids beyond the decoder's output vocabulary (the synthetic start token)."""
  return getattr(model.decoder, "input_only_ids", 0)
