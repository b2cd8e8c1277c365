"""Session encoders behind one protocol (:class:`encoders.base.SessionEncoder`)."""

from encoders.base import ENCODER_NAMES, EncoderName, SessionEncoder, encode_sequence
from encoders.errors import EncoderError, EncoderInputError, EncoderStateError
from encoders.registry import build_encoder, load_encoder

__all__ = [
    "ENCODER_NAMES",
    "EncoderError",
    "EncoderInputError",
    "EncoderName",
    "EncoderStateError",
    "SessionEncoder",
    "build_encoder",
    "encode_sequence",
    "load_encoder",
]
