"""Intermediate representation: neuron groups, synapse groups, and the fixed-point op library.

Depends on numpy and nothing else of mflc: it describes what runs, not which model it came from nor
how it is executed.
"""
