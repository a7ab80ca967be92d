"""Data bundled with the package: `default.onnx`, the model `lpu decode` runs when given none
(read with importlib.resources, see `lpu.cli.default_model`)."""
