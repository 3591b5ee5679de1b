"""Ray Tune trainables that wrap tune_lsd.engine.Trainer."""
