"""ir.modes: the mode Enums are their strings everywhere, so no file, report or option changes."""
import json

from mflc.ir.modes import Schedule, Send


def test_modes_equal_hash_and_print_as_their_strings():
    for m in (*Send, *Schedule):
        s = m.value
        assert m == s and s == m and hash(m) == hash(s) and s in {m} and m in {s}
        assert str(m) == s and f"{m}" == s and f"{m:>12}" == f"{s:>12}" and json.dumps(m) == json.dumps(s)
    assert Send.values() == ("every", "delta") and Schedule.values() == ("sequential", "pipelined")
    assert all(type(v) is str for v in Send.values())
