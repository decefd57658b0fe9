"""The console commands that `pip install` puts on PATH (setup.py names them): each runs one
binary of this directory, which setup.py installs as the package `savae_tf_bin`.

`savae-train-text --model=vae ...` is `python bin/train_text.py --model=vae ...`: the binary runs
as `__main__`, where absl looks for a binary's flags and help. This module imports nothing of
TensorFlow or savae_tf, so the binary's own first lines (its log settings) still come first.
"""

import runpy


def _run(binary: str):
  runpy.run_module(f"{__name__}.{binary}", run_name="__main__", alter_sys=True)


def train_text():
  _run("train_text")


def train_images():
  _run("train_images")


def train_synthetic():
  _run("train_synthetic")


def evaluate():
  _run("evaluate")


def generate():
  _run("generate")


def export():
  _run("export_savedmodel")
