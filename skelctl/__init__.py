"""skelctl: self-supervised skeleton action recognition toolkit."""

__version__ = "0.1.0"
