"""mlthreat: the adversarial ML threat matrix (MITRE ATLAS) as a working toolkit."""

__version__ = "0.1.0"

__all__ = ["__version__"]
