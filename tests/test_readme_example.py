"""The example of docs/keras.md (savae_tf's LSTMDecoder and `refine` inside a Keras model of one's
own), run exactly as the document shows it."""

import pathlib
import re

import numpy as np

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "keras.md"
MARKER = "<!-- keras-example -->"


def example_code():
  """The ```python block right after the marker."""
  text = DOC.read_text()
  assert text.count(MARKER) == 1, f"{DOC} needs exactly one {MARKER}"
  block = re.match(r"\s*```python\n(.*?)```", text.split(MARKER, 1)[1], re.DOTALL)
  assert block, f"no ```python block after {MARKER}"
  return block.group(1)


def test_the_keras_example_trains_through_the_refinement():
  code = example_code()
  assert len(code.splitlines()) < 20, "the example promises under 20 lines"
  names = {}
  exec(compile(code, str(DOC), "exec"), names)  # pylint: disable=exec-used
  model, optimizer, tokens, tf = (names[k] for k in ("model", "optimizer", "tokens", "tf"))
  assert np.isfinite(float(names["loss"]))
  assert optimizer.iterations.numpy() == 1  # the example's own step was applied
  # The encoder learns only from the loss at the refined posterior, so its gradient must cross
  # the refinement.
  losses = []
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = model(tokens)
    grads = tape.gradient(loss, model.trainable_variables)
    encoder = [g for v, g in zip(model.trainable_variables, grads)
               if any(v is w for w in model.embed.weights + model.heads.weights)]
    assert len(encoder) == 3 and all(g is not None and float(tf.norm(g)) > 0 for g in encoder)
    optimizer.apply(grads, model.trainable_variables)
    losses.append(float(loss))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0] < float(names["loss"])
