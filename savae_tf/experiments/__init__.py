"""Experiments: the runner (`runner.Experiment`, `runner.run_experiment`) and, one module per
training binary, the experiments its flags describe (`text`, `images`, `synthetic`)."""
