"""qocr: bulk document digitization with Alibaba Cloud's Qwen-OCR models."""

__version__ = "0.1.0"
