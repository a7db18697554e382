"""Executors of the IR: the plain numpy reference interpreter and the Numba engine."""
