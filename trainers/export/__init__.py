"""From a training checkpoint to what the pipeline runs.

onnx.py: checkpoint -> ONNX with its sidecar, checked against PyTorch. quantize.py: FP32 ONNX -> INT8
ONNX (QDQ) by static calibration on real images, for ONNX Runtime's CPU path or TensorRT.
"""
