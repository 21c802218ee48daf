"""Fixtures for the inference tests: a Generator over the tiny model, and a few image files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture()
def generator(tiny_model, tiny_processor):
    """A Generator over the random-init tiny model (template from its config: vicuna_v1)."""
    from minigemini.infer.generate import Generator

    return Generator(tiny_model, tiny_processor)


@pytest.fixture()
def image_files(tmp_path: Path) -> list[Path]:
    """Two small PNGs of different sizes and colours."""
    paths = []
    for i, (size, colour) in enumerate([((40, 30), (200, 20, 20)), ((64, 64), (20, 180, 60))]):
        path = tmp_path / f"img{i}.png"
        image = Image.new("RGB", size, colour)
        image.paste((255, 255, 255), (5, 5, 15, 15))
        image.save(path)
        paths.append(path)
    return paths
