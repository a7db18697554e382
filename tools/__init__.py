"""mflc: the MatMul-Free Loihi Compiler.

The pipeline API (``mflc.compile``, ``mflc.Build``) is imported on first use, so that ``import mflc``
stays cheap for the CLI.
"""

__version__ = "0.1.0"

__all__ = ["Build", "compile", "__version__"]


def __getattr__(name):
    if name == "compile":
        from .api import compile

        return compile
    if name in ("Build", "BuildError"):
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module 'mflc' has no attribute {name!r}")
