"""Using a trained classifier: photos made into MNIST images, predictions, ONNX export, the demo page."""
