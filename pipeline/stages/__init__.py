"""The DVC stages, one module each: `python -m pipeline.stages.<name>` reads params.yaml and
writes the stage's outputs, nothing else. dvc.yaml wires them together."""
