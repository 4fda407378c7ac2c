"""Anchors: Faster R-CNN's RPN anchors, SSD's default boxes and RetinaNet's anchors (course slides 50-52, 63).

Each tiles every location of one or several feature maps with boxes of a few sizes and aspect ratios; a
detector classifies each box and regresses its offsets. torchvision's generators
(:class:`~torchvision.models.detection.anchor_utils.DefaultBoxGenerator`, ``AnchorGenerator``) do the
tiling; this module computes the papers' sizes for a given image size. Matching anchors to ground
truth is torchvision's too (``Matcher``, ``SSDMatcher`` in ``torchvision.models.detection._utils``),
configured by each model.
"""

from __future__ import annotations

from typing import Sequence

from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator


def check_one_size_per_level(sizes: Sequence[float], num_levels: int) -> None:
    """With an FPN the i-th anchor size goes to the i-th level (Lin et al. 2017, Sec. 4.1), so each level needs one."""
    if len(sizes) != num_levels:
        raise ValueError(f"an FPN with {num_levels} levels needs one anchor size per level, got sizes={list(sizes)}")


def rpn_anchor_generator(sizes: Sequence[int], aspect_ratios: Sequence[float], num_levels: int) -> AnchorGenerator:
    """The RPN's anchors (Ren et al. 2015, Sec. 3.1.1): every size and ratio on one feature map, or one size per
    level of a pyramid.

    With one map every location has ``len(sizes) * len(aspect_ratios)`` anchors (the paper: 3 x 3 = 9);
    with an FPN the i-th size goes to the i-th level (:func:`check_one_size_per_level`).
    """
    if num_levels == 1:
        return AnchorGenerator((tuple(sizes),), (tuple(aspect_ratios),))
    check_one_size_per_level(sizes, num_levels)
    return AnchorGenerator(tuple((s,) for s in sizes), (tuple(aspect_ratios),) * num_levels)


def ssd_scales(num_maps: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """SSD's default-box scales (Liu et al. 2016, Sec. 2.2, Eq. 4), as fractions of the image side.

    ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)`` for the m maps, continued one step to
    ``s_{m+1}`` so that the last map also gets its extra square box of scale ``sqrt(s_m s_{m+1})``.
    The paper uses s_min 0.2, s_max 0.9 for 300 px (conv4_3 gets 0.1 on its own).
    """
    if num_maps < 2:
        raise ValueError(f"SSD uses several feature maps, got num_maps={num_maps}")
    step = (s_max - s_min) / (num_maps - 1)
    return [s_min + step * k for k in range(num_maps + 1)]


def default_box_generator(
    aspect_ratios: Sequence[Sequence[float]], s_min: float = 0.2, s_max: float = 0.9
) -> DefaultBoxGenerator:
    """SSD's default boxes: on map k, squares of scale ``s_k`` and ``sqrt(s_k s_{k+1})`` and, for each
    ratio ``a`` listed for that map, boxes ``s_k sqrt(a)`` wide and ``s_k / sqrt(a)`` high and their
    transposes (the paper's {2, 1/2, 3, 1/3}: list ``[2, 3]``). Centred on the cells
    (``(i + 0.5) / f_k``), clipped to the image."""
    return DefaultBoxGenerator([list(r) for r in aspect_ratios], scales=ssd_scales(len(aspect_ratios), s_min, s_max))


def retinanet_anchor_sizes(base_sizes: Sequence[float], scales_per_octave: int = 3) -> list[tuple[float, ...]]:
    """Per level, the base size times ``2^(i / scales_per_octave)`` for ``i < scales_per_octave``
    (Lin et al. 2017, Sec. 4: sizes {2^0, 2^(1/3), 2^(2/3)} of 32..512 px on P3..P7)."""
    return [tuple(base * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)) for base in base_sizes]


def retinanet_anchor_generator(
    base_sizes: Sequence[float],
    scales_per_octave: int = 3,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    single_level: bool = False,
) -> AnchorGenerator:
    """RetinaNet's anchors: 3 scales x 3 aspect ratios (height / width) at every location.

    With an FPN, level i gets the sizes of ``base_sizes[i]``; ``single_level`` puts the sizes of all
    base sizes on one feature map (the "no FPN" ablation keeps the same set of anchor shapes).
    """
    sizes = retinanet_anchor_sizes(base_sizes, scales_per_octave)
    if single_level:
        sizes = [tuple(s for level in sizes for s in level)]
    return AnchorGenerator(tuple(sizes), (tuple(aspect_ratios),) * len(sizes))
