"""The model side: HF checkpoints, configuration, the float model, quantization, the integer
reference model and the lowering of a quantized model to IR."""
