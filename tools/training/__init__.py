"""Quantization-aware training of the embedded default model. ``train.py`` runs as a script in its own venv
(torch, no mflc); ``corpus.py`` (the corpus and its train/held-out split) is shared with ``mflc eval --heldout``."""
