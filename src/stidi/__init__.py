"""stidi: single-spike convolutional spiking networks trained by STiDi-BP."""

__version__ = "0.1.0"
