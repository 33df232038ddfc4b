"""The open licence of every scikit-image photo a training config may name."""

from __future__ import annotations

__all__ = ["TRAINING_LICENCES"]

# Licence of every skimage/data image the config may name, from the docstrings in
# skimage/data/_fetchers.py (scikit-image 0.26). An image without an explicit open
# licence there (motorcycle_*.png: Middlebury, none stated; color.png: none stated)
# is deliberately absent, so a config cannot train on it.
TRAINING_LICENCES: dict[str, str] = {
    "astronaut.png": "public domain (NASA; 'No known copyright restrictions')",
    "chelsea.png": "CC0 (photographer Stefan van der Walt)",
    "coffee.png": "CC0 (photographer Rachel Michetti)",
    "hubble_deep_field.jpg": "public domain (NASA, 'may be freely used')",
    "retina.jpg": "CC0 1.0 (Wikimedia Commons, Häggström)",
    "ihc.png": "no known copyright restrictions (CMMI)",
    "rocket.jpg": "public domain (SpaceX)",
    "camera.png": "CC0 (photographer Lav Varshney)",
    "brick.png": "CC0 (CC0Textures Bricks25)",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures Gravel04)",
    "text.png": "public domain (Wikimedia Commons, Corner.png)",
}
