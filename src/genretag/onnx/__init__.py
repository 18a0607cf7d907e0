"""The ONNX side of every model: the contract (names, metadata, v2 checks) and the graph blocks
(in-graph front ends, composition).

Imports: genretag.core, genretag.dsp (the references the front ends reproduce)."""
