"""The executable spec's tools: traces of every site's integers per token (``trace``), conformance vector
sets another implementation checks itself against (``conformance``), and what a set of traces reaches
(``coverage``: table entries, saturation ends, rounding ties). docs/formats.md and docs/conformance.md."""
