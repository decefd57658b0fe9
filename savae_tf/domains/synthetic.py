"""The synthetic oracle's sequences (Table 1 of Kim et al. 2018): text of a fixed length from a
known generator, so that the true NLL and posterior are computable (`savae_tf.data.synthetic`).
As a domain it is text; what is its own (the truth, the table, the pictures against the truth)
is in `savae_tf.experiments.synthetic`."""

from savae_tf.domains.text import TextDomain


class SyntheticDomain(TextDomain):
  """Text whose vocabulary has an input-only start token and no `</s>`."""
  name = "synthetic"
  svi_lr = 0.003  # the oracle's validation (RESULTS.md)
