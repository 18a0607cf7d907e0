"""Reading audio: decoding any container to mono float32 at a rate, seeking windows, and the
file-level facts (SHA-256, scan of a folder) the data and tagging paths share.

Imports: genretag.core, genretag.dsp."""
