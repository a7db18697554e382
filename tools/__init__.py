"""mflc: the MatMul-Free Loihi Compiler."""

__version__ = "0.1.0"
