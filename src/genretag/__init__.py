"""genretag: tag a music catalog with genres from mel-spectrogram images."""

from genretag.core.environment import quiet_telemetry

quiet_telemetry()

__version__ = "0.1.0"
