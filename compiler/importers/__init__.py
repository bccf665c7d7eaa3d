"""Importers shared by model families: PyTorch export with a numeric check (torch_export.py),
factories and data functions from a recipe's workspace (torch_factory.py, callables.py),
Hugging Face models on disk (huggingface.py, keyword_wrapper.py) and existing ONNX files
(onnx_file.py). Which importer a recipe uses is its family's decision."""
