"""Evaluation of a trained model on a data set into one report of named metrics.

The names are the project's (DESIGN.md): `nll_bound` (amortized -ELBO, nats per example),
`refined_nll_bound` (after `svi_steps` test-time SVI steps), `kl`, `iw_nll` (importance-weighted,
`num_samples` samples, proposal q at the refined posterior), `ppl`, `ppl_bound`, `mi`,
`active_units`. Evaluation uses KL weight 1, no dropout, and a stopped refinement gradient.
"""

from typing import Dict, Optional


def evaluate(model, dataset, svi_steps: Optional[int] = None,
             num_samples: int = 500) -> Dict[str, float]:
  """Runs `model.evaluate` with the given test-time K and importance sample count."""
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0 (0 skips iw_nll); got {num_samples}.")
  if svi_steps is not None:
    if svi_steps < 0:
      raise ValueError(f"svi_steps must be >= 0; got {svi_steps}.")
    model.test_svi_steps = svi_steps
  model.eval_num_samples = num_samples
  model.test_function = None  # the settings above are baked into the traced test step
  results = model.evaluate(dataset, verbose=0, return_dict=True)
  report = {name: float(value) for name, value in results.items()}
  if num_samples:
    report["iw_num_samples"] = num_samples
  report["svi_steps"] = model.test_svi_steps
  return report
