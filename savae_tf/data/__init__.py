"""Data pipelines: synthetic (the oracle of Table 1); text and images come later."""
