"""PeaPOD: personalized prompt distillation for generative recommendation."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``peapod.load`` / ``peapod.Recommender`` import the API (and torch) on first use only,
    # so ``import peapod`` stays light.
    if name in ("load", "Recommender"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
