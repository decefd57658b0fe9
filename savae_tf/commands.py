"""The console commands `pip install` puts on PATH, each running one binary of `bin/`.

`savae-train-text --model=vae ...` is `python bin/train_text.py --model=vae ...`: the binary runs
as `__main__` (absl lists a binary's flags under the main module), from the `savae_tf_bin`
package that setup.py installs from `bin/`.
"""

import runpy

# Command name -> the binary it runs.
COMMANDS = {
    "savae-train-text": "train_text",
    "savae-train-images": "train_images",
    "savae-train-synthetic": "train_synthetic",
    "savae-evaluate": "evaluate",
    "savae-generate": "generate",
    "savae-export": "export_savedmodel",
}


def _run(binary: str):
  runpy.run_module(f"savae_tf_bin.{binary}", run_name="__main__", alter_sys=True)


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
