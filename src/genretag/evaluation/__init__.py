"""Measuring models: classification metrics, calibration (ECE, temperature), drift measures,
the champion gate's statistics and decision, and the evaluate stage.

Imports: genretag.core, genretag.audio, genretag.dsp, genretag.data, genretag.onnx."""
