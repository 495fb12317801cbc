"""Image shapes as the networks take them, and as their one-line errors print them."""

from collections.abc import Sequence


def chw(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` as plain ints: Hydra passes ``image_shape`` as a ListConfig."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (C, H, W) of positive ints, got {list(image_shape)}")
    return shape  # type: ignore[return-value]


def shape_str(shape: Sequence[int]) -> str:
    """``3x48x48``: how the errors name the data's images."""
    return "x".join(str(s) for s in shape)


def override(values: Sequence[int]) -> str:
    """``[32,64,128]``: a list as a Hydra override spells it, so a message can be copied."""
    return "[" + ",".join(str(v) for v in values) + "]"
