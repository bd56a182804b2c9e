"""spamfilter: a GPT-2 spam classifier for mail, trained in torch and run with onnxruntime."""

__version__ = "0.1.0"
