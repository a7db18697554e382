"""The ``mflc`` command line: readable tables by default, ``--json`` for machines, exit 1 on bad input.

The commands live in one module per theme (model, build, layout, sim, accuracy, lava); importing them registers them on the shared ``app`` of ``mflc.cli.app``."""
from __future__ import annotations

from mflc.cli import accuracy, build, lava, layout, model, sim, spec  # noqa: F401 (registration)
from mflc.cli.app import (Stages, app, check_out_dir, check_out_file, emit_json, err, guarded, kv_table,  # noqa: F401
                          out, progress_bar, resolve_model)


def main() -> None:
    """The ``mflc`` console entry point."""
    app()
