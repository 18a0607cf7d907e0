"""Signal-processing references in numpy: the paper's mel image (spectrogram) and MFCC statistics (features).

These are the parity targets of every ONNX front end. Imports: genretag.core only."""
