"""tune_lsd: Ray Tune hyperparameter search for deep metric learning with Listwise Self-Distillation."""

__version__ = "0.1.0"
