"""Writes the image-preprocessing fixtures of tests/images from HF transformers' CLIPImageProcessor.

The inputs are photographs shipped with scikit-image 0.21 (skimage/data; its documentation lists them as public
domain or CC0): chelsea.png (a cat, 451 x 300 RGB PNG), rocket.jpg (a launch, 640 x 427 JPEG) and camera.png (a
photographer, 512 x 512 greyscale PNG). Each is copied here and preprocessed as KOSMOS preprocesses images (spec 6.5):
CLIPImageProcessor() with its defaults (convert to RGB, shortest edge 224 bicubic through Pillow, centre crop 224,
rescale 1/255, OpenAI CLIP mean and std), saved as <name>.clip.npy [3, 224, 224] float32.

Rerun (needs the peer venv of tests/golden/README.md plus `pip install --no-deps scikit-image==0.21.0`):
  .peer/venv/bin/python tests/images/make_image_fixtures.py
"""
import os
import shutil

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["chelsea.png", "rocket.jpg", "camera.png"]


def skimage_data_dir():
    import importlib.util
    spec = importlib.util.find_spec("skimage")  # the data files only: importing skimage needs more packages
    return os.path.join(os.path.dirname(spec.origin), "data")


if __name__ == "__main__":
    processor = CLIPImageProcessor()
    for name in NAMES:
        target = os.path.join(HERE, name)
        shutil.copyfile(os.path.join(skimage_data_dir(), name), target)
        image = Image.open(target)
        pixels = processor(images=image, return_tensors="np")["pixel_values"][0].astype(np.float32)
        np.save(os.path.join(HERE, name + ".clip.npy"), pixels)
        print(name, image.size, image.mode, "->", pixels.shape, pixels.dtype)
