"""PeaPOD: personalized prompt distillation for generative recommendation."""

__version__ = "0.1.0"

