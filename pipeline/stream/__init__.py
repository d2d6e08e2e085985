"""The streaming shell: Faust agents around the engine, checkpoints, dead letters."""
