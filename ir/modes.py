"""The mode strings several modules compare, named once: how a group sends and how tokens are scheduled.

Each is a ``str`` Enum whose members equal, hash and format as their plain strings, so IR files, JSON
reports and CLI options keep holding the strings themselves: code compares ``grp.send == Send.DELTA``
where it used to spell ``"delta"``, and nothing stored or printed changes.
"""
from __future__ import annotations

from enum import Enum


class StrMode(str, Enum):
    """A mode that is its string everywhere (==, hash, str, format), unlike a plain Enum member."""

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The modes as plain strings, in declaration order (for messages and option checks)."""
        return tuple(m.value for m in cls)


class Send(StrMode):
    """NeuronGroup.send: every token's value, or only its change since the last token (sigma-delta)."""

    EVERY = "every"
    DELTA = "delta"


class Schedule(StrMode):
    """Token injection: the next token after the last has left the pipeline, or one token per step (prefill)."""

    SEQUENTIAL = "sequential"
    PIPELINED = "pipelined"
