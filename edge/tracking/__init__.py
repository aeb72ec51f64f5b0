"""Face tracking: ONNX model runners, face detector, 468 landmarks, 3-D from depth, smoothing."""
