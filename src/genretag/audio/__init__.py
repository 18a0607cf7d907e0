"""Reading audio: decoding any container to mono float32 at a rate and the file-level facts (SHA-256)
the data and tagging paths share (``decoding``); decoding only the windows scoring needs, by seeking
(``seeking``); walking a folder for audio files (``folders``); the one clip-cutting rule (``clips``).

Imports: genretag.core, genretag.dsp."""
