"""The ``mflc`` command line: readable tables by default, ``--json`` for machines, exit 1 on bad input.

The commands live in their own modules (cli_model, cli_build, cli_layout, cli_sim, cli_accuracy, cli_lava);
importing them registers them on the shared ``app`` of ``mflc.cli_app``."""
from __future__ import annotations

from mflc import cli_accuracy, cli_build, cli_lava, cli_layout, cli_model, cli_sim  # noqa: F401 (registration)
from mflc.cli_app import (Stages, app, check_out_dir, check_out_file, emit_json, err, guarded, kv_table,  # noqa: F401
                          out, progress_bar, resolve_model)


def main() -> None:
    """The ``mflc`` console entry point."""
    app()
