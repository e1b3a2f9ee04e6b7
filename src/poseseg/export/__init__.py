"""Deployment: the whole model as one ONNX file (deformable layers as DeformConv), run by ONNX Runtime or OpenVINO."""
