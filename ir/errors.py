"""The one exception family of mflc.

Every error a user can cause (bad file, bad tensor, impossible layout) is an ``MflcError`` whose
message names the thing at fault and what was expected; the CLI turns it into one line on stderr and
a non-zero exit instead of a traceback. It lives in ``ir`` because ``ir`` depends on nothing else of
ours and every other package may import it.
"""
from __future__ import annotations


class MflcError(Exception):
    """Base class for errors caused by user input or by limits the input exceeds."""


class ConfigError(MflcError):
    """A model or hardware configuration field is missing, of the wrong type, or contradictory."""


class CheckpointError(MflcError):
    """A checkpoint file or tensor is missing, truncated, misshaped, of a wrong dtype or non-finite."""


class IRValidationError(MflcError):
    """An IR graph breaks one or more rules; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} IR problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


class FitError(MflcError):
    """The network cannot be placed on the chosen hardware; ``violations`` lists every one."""

    def __init__(self, violations: list[str]):
        self.violations = list(violations)
        super().__init__(
            f"{len(self.violations)} placement violation(s):\n"
            + "\n".join(f"  - {v}" for v in self.violations)
        )
