"""What a data kind is to the rest of the library: one `Domain` object each.

A domain owns everything that differs between text, images and the synthetic oracle: how a batch
is read (`observe` -> `Observation`, whose `nll` is the likelihood -log p(x | z) and whose
`units` are what per-unit metrics divide by), the metrics per unit (perplexity for text), the
artefacts a saved model needs beside its weights (a vocabulary), the export module of its
SavedModel, and the pictures of a trained model. Nothing outside `savae_tf.domains` asks which
data kind it holds: it asks the domain (`savae_tf.domains.of(model)`).
"""

from typing import Any, ClassVar, Dict, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from savae_tf import distributions


class Observation(NamedTuple):
  """One batch as the model reads it (a domain's `observe`). Domains subclass it to say what
  `nll` and `units` are."""
  encoder_inputs: Tuple[tf.Tensor, ...]  # what the encoder takes, e.g. (tokens, lengths)
  decoder_inputs: tf.Tensor  # what `decoder.prepare` takes
  targets: tf.Tensor  # what the decoder predicts
  mask: Optional[tf.Tensor]  # which targets are real (None: every one)
  content: tf.Tensor  # each example as integers, which key its evaluation noise

  def example_seeds(self, *words) -> distributions.ExampleSeeds:
    """Noise keys of each example's own content (padding excluded), folded with `words`."""
    return distributions.ExampleSeeds.of_content(self.content, self.mask, words)

  def nll(self, logits) -> tf.Tensor:
    """-log p(x | z) per example, [batch], from the decoder's logits."""
    raise NotImplementedError

  def units(self) -> tf.Tensor:
    """What each example predicts, [batch] int32 (tokens, pixels): per-unit metrics divide by
    its sum."""
    raise NotImplementedError

  def tiled(self, samples):
    """The targets (and mask) repeated `samples` times along the batch: sample-major, to match
    a decoder run on `samples` copies of the batch."""
    def tile(x):
      return None if x is None else tf.tile(
          x, tf.concat([[samples], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
    return self._replace(targets=tile(self.targets), mask=tile(self.mask))


class Domain:
  """A data kind. Subclasses set `name` and implement `observe`; the other hooks default to a
  domain without per-unit metrics, artefacts or pictures."""
  name: ClassVar[str]
  input_name: ClassVar[str]  # what its SavedModel's `encode` and `score` take ("sentences")
  # The per-example refinement step chosen on this data's validation set for SA-VAE (a method may
  # have its own: `methods.Method.svi_lrs`).
  svi_lr: ClassVar[float] = 0.003

  def observe(self, data: Mapping[str, tf.Tensor]) -> Observation:
    """The `Observation` of a batch dict; a batch without this domain's keys is a ValueError
    naming them."""
    raise NotImplementedError

  def unit_metrics(self, rows: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Metrics per unit from a data set's per-example rows (`savae_tf.evaluate.report`)."""
    del rows
    return {}

  def save_artefacts(self, artefacts: Any, model_dir: str) -> None:
    """Writes what a saved model needs beside its weights (`savae_tf.runs.save_model`)."""
    if artefacts is not None:
      raise ValueError(f"A model of domain {self.name!r} is saved without artefacts; got "
                       f"{type(artefacts).__name__}.")
    del model_dir

  def load_artefacts(self, model, model_dir: str) -> Any:
    """What `save_artefacts` wrote, checked against the model."""
    del model, model_dir

  def export_module(self, model, artefacts: Any):
    """The `savae_tf.signatures.ModelExport` of a model of this domain."""
    raise NotImplementedError

  def posterior_colour(self, rows: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, str]:
    """What colours each example in the picture of the posterior means, and its label."""
    return rows["nll_bound"], "-ELBO (nats)"

  def pictures(self, model, test, model_dir: str, seed: int, count: int = 8) -> Dict[str, str]:
    """Pictures of a trained model on `count` of its test examples (`test`: the batches object);
    returns {name: PNG path}. Raises `figures.MissingPlotting` without matplotlib."""
    del model, test, model_dir, seed, count
    return {}
