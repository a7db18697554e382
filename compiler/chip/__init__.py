"""The chip side: the Loihi 2 hardware profile, fan-in splitting and partitioning, placement on cores
and chips, the layout and its checker, the cost model and the reports. Reads IR, never a model."""
