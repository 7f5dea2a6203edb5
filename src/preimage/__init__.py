"""preimage: inverting visual representations with convolutional networks."""
__version__ = "0.1.0"
