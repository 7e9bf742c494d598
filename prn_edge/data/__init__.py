"""Data: reading images, finding datasets on disk, the offline demo dataset and anomaly synthesis."""
from .dataset import Category, Sample, load_category, load_pair
from .images import IMAGE_EXTS, image_header, read_image, read_mask, write_image, write_mask

__all__ = ["Category", "Sample", "load_category", "load_pair", "IMAGE_EXTS", "image_header", "read_image",
           "read_mask", "write_image", "write_mask"]
