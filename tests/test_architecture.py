"""The recipes of docs/architecture.md, each shown working: a new method is one class and one
registration; the model holds parts, and one function reports every number."""

import numpy as np
import pytest
import tensorflow as tf

from savae_tf import evaluate
from savae_tf import methods
from savae_tf.data import text
from savae_tf.model import SemiAmortizedVAE, SVIConfig
from savae_tf.networks.text import LSTMDecoder, LSTMEncoder


@pytest.fixture
def half_savae():
  """The docs' example method, registered for the test and removed after it."""

  @methods.register
  class HalfSAVAE(methods.Method):
    """SA-VAE through only the first K // 2 refinement steps."""
    name = "half_savae"
    refines = True
    differentiates_refinement = True

    def refined_posterior(self, model, batch, mean0, logvar0):
      half = batch._replace(steps=batch.steps // 2)
      return model.refiner.posterior(model.objective, half, mean0, logvar0, batch.gradient)

  yield HalfSAVAE
  del methods.METHODS[HalfSAVAE.name]


def corpus():
  rng = np.random.default_rng(0)
  return text.BatchedCorpus([list(rng.integers(4, 12, rng.integers(3, 7))) for _ in range(24)],
                            batch_size=8, pad_id=0, seed=1)


def test_a_method_is_one_class_and_one_registration(half_savae):
  model = SemiAmortizedVAE(LSTMDecoder(12, 6, 6, 2, use_cudnn=False), LSTMEncoder(12, 6, 6, 2),
                           mode="half_savae", latent_dim=2,
                           svi_config=SVIConfig(steps=4, gradient="unrolled"))
  model.compile(optimizer="sgd")
  batches = corpus()
  before = [v.numpy() for v in model.encoder.trainable_variables] if model.encoder.built else None
  history = model.fit(batches.dataset(0), epochs=1, verbose=0)
  assert np.isfinite(history.history["loss"][-1])
  # Trained through the refinement: the encoder learnt (its only path is through lambda_0).
  assert before is None or any(not np.array_equal(a, v.numpy()) for a, v in
                               zip(before, model.encoder.trainable_variables))
  report = evaluate.evaluate(model, batches.dataset(), num_samples=2)
  assert {"refined_nll_bound", "ppl", "mi", "refined_mi"} <= set(report)
  # Half of K: the refined terms equal the VAE+SVI refinement's at K // 2 from the same lambda_0.
  data = next(iter(batches.dataset()))
  out = model.forward(data, tf.constant([1, 2]), False, tf.constant(1.0), 4, "none")
  batch = model.batch(data, tf.constant([1, 2]), False, tf.constant(1.0), 2, "none")
  mean_k, _ = model.refiner.posterior(model.objective, batch, out["mean0"], out["logvar0"],
                                      "none")
  np.testing.assert_allclose(out["mean"], mean_k, rtol=1e-6, atol=1e-7)
  with pytest.raises(ValueError, match="registered already"):
    methods.register(type("Other", (methods.Method,), {"name": "half_savae"}))


def test_every_tf_function_of_the_library_is_built_without_autograph():
  """docs/architecture.md: loops and branches on tensors are explicit, so autograph is off."""
  import ast
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[1] / "savae_tf"
  sites = []
  for path in root.rglob("*.py"):
    nodes = list(ast.walk(ast.parse(path.read_text())))
    called = {id(node.func): node for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:  # `tf.function(...)`, and a bare `@tf.function` (no keywords: flagged)
      if (isinstance(node, ast.Attribute) and node.attr == "function"
          and isinstance(node.value, ast.Name) and node.value.id == "tf"):
        call = called.get(id(node))
        keywords = {k.arg: k.value for k in call.keywords} if call else {}
        off = isinstance(keywords.get("autograph"), ast.Constant) and (
            keywords["autograph"].value is False)
        sites.append((f"{path.relative_to(root)}:{node.lineno}", off))
  assert len(sites) >= 20  # the scan finds the library's functions
  assert [site for site, off in sites if not off] == []
