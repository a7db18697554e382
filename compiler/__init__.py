"""Models in, IR and layouts out. Two sub-packages show the pipeline: ``model`` (checkpoint, config, float
model, quantizer, integer model, lowering to IR) and ``chip`` (hardware profile, partition, placement,
layout, cost model, reports); the model side never imports the chip side (tests/test_architecture.py)."""
