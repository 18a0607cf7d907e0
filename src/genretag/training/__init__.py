"""Fitting and sealing a candidate: the candidate stage (fit the family, export it parity-gated,
calibrate, quantise) and its model card.

Imports: everything below it (core, audio, dsp, data, onnx, families, evaluation); never registry, tagging, cli."""
