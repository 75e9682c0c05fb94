"""migu's alternative exporter: Hugging Face checkpoint → migu model folder
through torch.onnx.export (see export.py). Run `python -m export HF_DIR
OUT_DIR` from python/, or `python python/export/export.py HF_DIR OUT_DIR`."""

from .export import BadInput, export_model, main

__all__ = ["BadInput", "export_model", "main"]
