"""The data kinds, by name: text, images and the synthetic oracle (see `base.Domain`).

A decoder names its domain (`decoder.domain`); `of(model)` is that domain. Adding a data kind: a
`Domain` subclass in its own module, a decoder whose `domain` names it, a test, and one entry in
`DOMAINS`.
"""

from typing import Dict

import tensorflow as tf

from savae_tf.domains.base import Domain, Observation
from savae_tf.domains.images import ImageDomain
from savae_tf.domains.synthetic import SyntheticDomain
from savae_tf.domains.text import TextDomain

DOMAINS: Dict[str, Domain] = {domain.name: domain for domain in (TextDomain(), ImageDomain(),
                                                                 SyntheticDomain())}


def get(name: str) -> Domain:
  if name not in DOMAINS:
    raise ValueError(f"Unknown domain {name!r}; expected one of {tuple(DOMAINS)}.")
  return DOMAINS[name]


def of(model) -> Domain:
  """The domain of a model (or of a decoder): the one its decoder names."""
  return get(getattr(model, "decoder", model).domain)


def of_signatures(signatures) -> Domain:
  """The domain whose export module made exported `signatures` (by what their `encode` takes);
  the first registered of that input (text, not the synthetic oracle's text)."""
  specs = tf.nest.flatten(signatures["encode"].structured_input_signature)
  names = {getattr(spec, "name", None) for spec in specs}
  for domain in DOMAINS.values():
    if domain.input_name in names:
      return domain
  raise ValueError(f"No domain takes the inputs {sorted(map(str, names))}.")


__all__ = ["DOMAINS", "Domain", "Observation", "get", "of", "of_signatures"]
