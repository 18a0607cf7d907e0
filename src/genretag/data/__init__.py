"""The training data: ingest (a corpus folder, the demo synthesiser, reviewed labels) into data/raw,
validation with Great Expectations, and the track/clip split.

Imports: genretag.core, genretag.dsp, genretag.audio."""
