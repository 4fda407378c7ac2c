#!/usr/bin/env python
"""The R-CNN family at the papers' scale: VGG16, VOC-sized images, ~2000 Selective Search boxes, 300 RPN boxes.

  python scripts/bench_rcnn_family.py [--images DIR] [--num-images 3] [--device cpu|cuda] [--out DIR]

The embedded comparison (``scripts/compare.py``) times the course's small models on 128 px images; this
table rebuilds the three detectors the way the papers do and times them stage by stage:

- R-CNN (Girshick et al., CVPR 2014, Sec. 2.1-2.2): every Selective Search box, dilated so that 16 px of
  context surround it, warped to 224 x 224 and run through all of VGG16 (conv1_1 ... pool5, fc6, fc7),
  then linear class scores on fc7 and box regression on pool5 (Appendix C).
- Fast R-CNN (Girshick, ICCV 2015, Sec. 2-3): the image resized to a shorter side of 600 (longer <= 1000),
  VGG16's conv5_3 (stride 16) once, RoI max pooling to 7 x 7 (``torchvision.ops.roi_pool``), fc6, fc7,
  the K+1 scores and class-specific deltas, per-class NMS; optionally fc6 / fc7 compressed by truncated
  SVD (Sec. 3.1: top 1024 / 256 singular values).
- Faster R-CNN (Ren et al., NIPS 2015, Sec. 3): the same network plus torchvision's RPN on conv5_3
  (3 scales x 3 ratios = 9 anchors, 6000 boxes before NMS at IoU 0.7, 300 after), the same RoI head.

Built from the repo's parts and torchvision's, not from the LightningModules (tied to the embedded sizes):
``torchvision.models.vgg16(weights=None)``, :class:`models.parts.roi_heads.FastRCNNHead` with VGG16's
fc6 / fc7, :func:`models.detection.rcnn.warp_regions`, :class:`models.parts.selective_search.SelectiveSearch`,
torchvision's ``RegionProposalNetwork`` / ``AnchorGenerator`` / ``GeneralizedRCNNTransform``. Weights are
random: the time and the FLOPs of a pass do not depend on their values (the detections are meaningless).
:func:`paper_scale_table` returns the rows and the Markdown table (``scripts/compare.py`` can call it).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes  # noqa: E402

from datamodules.shapes_generator import render_image  # noqa: E402
from models.detection.fast_rcnn import truncate_fc_layers  # noqa: E402
from models.detection.rcnn import warp_regions  # noqa: E402
from models.parts.box_coding import BoxCoder  # noqa: E402
from models.parts.image_ops import IMAGE_MEAN, IMAGE_STD, normalize  # noqa: E402
from models.parts.roi_heads import FastRCNNHead, RoIPooler, postprocess_detections  # noqa: E402
from models.parts.selective_search import SelectiveSearch  # noqa: E402

MODELS = ("rcnn", "fast_rcnn", "fast_rcnn_svd", "faster_rcnn")
STAGES = ("proposal_s", "transform_s", "conv_s", "head_s", "nms_s")

#: The papers' figures (s / image, VGG16, Nvidia K40; Selective Search on the CPU), as in
#: experiments/compare/published.yaml and the project's reference list.
PUBLISHED: dict[str, dict[str, Any]] = {
    "rcnn": {"without": 47.0, "source": "Fast R-CNN Table 4 (R-CNN, VGG16)"},
    "fast_rcnn": {
        "without": 0.32,
        "with": 1.83,
        "proposal": 1.51,
        "conv": 0.146,
        "region": 0.174,
        "source": "Fast R-CNN Table 4 (0.32 s); Faster R-CNN timing table 'VGG SS + Fast R-CNN' "
        "(1.83 s = SS 1.51 + conv 0.146 + region-wise 0.174)",
    },
    "fast_rcnn_svd": {"without": 0.22, "source": "Fast R-CNN Table 4 (truncated SVD); Fig. 2: 320 -> 223 ms"},
    "faster_rcnn": {
        "with": 0.198,
        "proposal": 0.010,
        "conv": 0.141,
        "region": 0.047,
        "source": "Faster R-CNN timing table 'VGG RPN + Fast R-CNN' (conv 141 + RPN 10 + region-wise 47 ms)",
    },
}


@dataclass
class PaperScaleConfig:
    """Settings of the table; the defaults are the papers'.

    Attributes:
        min_size, max_size: Fast / Faster R-CNN's test scale (Fast R-CNN Sec. 3.1: shorter side 600, longer <= 1000).
        crop_size, context_padding: R-CNN's warp (Sec. 2.1 / Appendix A: 16 px of context; 224 for VGG16).
        proposal_mode, max_proposals: Selective Search (fast mode, up to 2000 boxes, R-CNN Sec. 2.1).
        rpn_pre_nms, rpn_proposals: RPN boxes kept before / after its NMS at IoU 0.7 (Faster R-CNN: 6000 / 300).
        rcnn_regions: regions R-CNN actually runs per image (None: all); its per-region stages are scaled
            to the image's full count. rcnn_batch: regions per forward pass.
        flop_sample: regions a per-region stage runs under the FLOP counter (its FLOPs are exactly
            linear in the count, so they are scaled); per-image stages are counted once per image size.
        svd_ranks: (fc6, fc7) ranks of the truncated-SVD row (Sec. 3.1: 1024, 256); None: no such row.
        svd_init: ``random``: factor layers of those shapes at random init (as fast as the SVD's own
            factors, without the minutes an SVD of the 4096 x 25088 fc6 takes on 2 cores); ``exact``:
            :func:`models.detection.fast_rcnn.truncate_fc_layers` of the (random) fc6 / fc7.
        num_classes: object classes (VOC: 20).
        score_thresh, nms_thresh: test-time decoding (per-class NMS at 0.3 as both papers).
    """

    min_size: int = 600
    max_size: int = 1000
    crop_size: int = 224
    context_padding: float = 16.0
    proposal_mode: str = "fast"
    max_proposals: int = 2000
    rpn_pre_nms: int = 6000
    rpn_proposals: int = 300
    rcnn_regions: int | None = 32
    rcnn_batch: int = 32
    flop_sample: int = 2
    svd_ranks: tuple[int, int] | None = (1024, 256)
    svd_init: str = "random"
    num_classes: int = 20
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    seed: int = 0


# ------------------------------------------------------------------------------------------- images
def generated_images(
    num: int, width: int = 500, height: int = 375, seed: int = 0, tiles: tuple[int, int] = (8, 6)
) -> list[Tensor]:
    """``num`` generated ``width`` x ``height`` images (VOC's typical 500 x 375), 3 x H x W float in [0, 1]: each a
    mosaic of ``tiles`` = (columns, rows) scenes of the embedded shapes generator, cropped to size. One 500 px
    scene has flat backgrounds and gives Selective Search only ~150-400 boxes; the clutter of 8 x 6 scenes of
    63 px gives ~2000, as many as a VOC photo (the papers' count)."""
    cols, rows = tiles
    tile = max(-(-width // cols), -(-height // rows))
    out = []
    for i in range(num):
        mosaic = np.zeros((rows * tile, cols * tile, 3), np.uint8)
        for r in range(rows):
            for c in range(cols):
                scene = render_image(seed, "val", (i * rows + r) * cols + c, size=tile).image
                mosaic[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = scene
        rgb = np.ascontiguousarray(mosaic[:height, :width])
        out.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)
    return out


def load_images(folder: str | Path, num: int) -> list[Tensor]:
    """The first ``num`` photos (jpg / png / bmp, sorted by name) of ``folder``, 3 x H x W float in [0, 1]."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})[:num]
    if not paths:
        raise FileNotFoundError(f"no jpg / png / bmp image in {folder}")
    out = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read {path}")
        out.append(torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float() / 255.0)
    return out


# ------------------------------------------------------------------------------------------ networks
class PaperNetworks(nn.Module):
    """VGG16 (random init) as the three papers use it; one copy of the weights serves all the rows."""

    def __init__(self, cfg: PaperScaleConfig) -> None:
        super().__init__()
        vgg = torchvision.models.vgg16(weights=None)
        classes = cfg.num_classes + 1
        self.conv = vgg.features[:30]  # conv1_1 ... conv5_3 + ReLU: stride 16, 512 channels
        self.pool5 = nn.Sequential(vgg.features[30], vgg.avgpool)  # R-CNN: 7 x 7 x 512 per 224 px warp
        self.head = FastRCNNHead(512, classes, RoIPooler(7, 1.0 / 16, "pool"), representation_size=4096)
        self.head.fc_layers.fc6, self.head.fc_layers.fc7 = vgg.classifier[0], vgg.classifier[3]  # VGG16's own
        # R-CNN: class scores on fc7 (the SVMs are one linear map too), box regression on pool5 (Appendix C).
        self.rcnn_scores = nn.Linear(4096, classes)
        self.rcnn_bbox = nn.Linear(512 * 7 * 7, 4 * classes)
        self.svd_head = self._svd_head(cfg) if cfg.svd_ranks else None
        anchors = AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),))  # Faster R-CNN Sec. 3.1.1: 9 anchors
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(512, anchors.num_anchors_per_location()[0]),
            0.7,
            0.3,
            256,
            0.5,
            dict(training=12000, testing=cfg.rpn_pre_nms),
            dict(training=2000, testing=cfg.rpn_proposals),
            0.7,
        )
        self.transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, IMAGE_MEAN, IMAGE_STD)
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))

    def _svd_head(self, cfg: PaperScaleConfig) -> FastRCNNHead:
        head = copy.deepcopy(self.head)
        fc6_rank, fc7_rank = cfg.svd_ranks
        if cfg.svd_init == "exact":
            return truncate_fc_layers(head, fc6_rank, fc7_rank)
        if cfg.svd_init != "random":
            raise ValueError(f"svd_init must be 'random' or 'exact', got {cfg.svd_init!r}")
        for name, rank in (("fc6", fc6_rank), ("fc7", fc7_rank)):
            full = getattr(head.fc_layers, name)
            setattr(
                head.fc_layers,
                name,
                nn.Sequential(nn.Linear(full.in_features, rank, bias=False), nn.Linear(rank, full.out_features)),
            )
        return head

    def rcnn_conv(self, crops: Tensor) -> Tensor:
        """R-CNN's convolutions on warped regions: pool5 features, N x 25088."""
        return self.pool5(self.conv(crops)).flatten(1)

    def rcnn_head(self, pool5: Tensor) -> tuple[Tensor, Tensor]:
        """fc6, fc7 -> class scores; pool5 -> box deltas."""
        return self.rcnn_scores(self.head.fc_layers(pool5)), self.rcnn_bbox(pool5)


# ------------------------------------------------------------------------------------------ measuring
class _Clock:
    """Wall time of one call (``time.perf_counter``, CUDA synchronised on both sides on a GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def __call__(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        self.sync()
        start = time.perf_counter()
        out = fn(*args)
        self.sync()
        return out, time.perf_counter() - start


def count_flops(fn: Callable[..., Any], *args: Any) -> float:
    """FLOPs of ``fn(*args)`` (torch.utils.flop_counter: convolutions and matrix products, 2 per MAC)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return float(counter.get_total_flops())


def _decode(
    net: PaperNetworks, logits: Tensor, deltas: Tensor, boxes: Tensor, size: tuple[int, int], cfg: PaperScaleConfig
) -> dict[str, Tensor]:
    scores = logits.softmax(-1)
    return postprocess_detections(scores, deltas, boxes, size, net.box_coder, cfg.score_thresh, cfg.nms_thresh)


class _Bench:
    """Runs every model on one image at a time and keeps per-image stage times, counts and FLOPs."""

    def __init__(self, net: PaperNetworks, cfg: PaperScaleConfig, device: torch.device) -> None:
        self.net, self.cfg, self.device, self.clock = net, cfg, device, _Clock(device)
        self.search = SelectiveSearch(cfg.proposal_mode, cfg.max_proposals, use_cache=False)
        self.per_image: dict[str, list[dict[str, float]]] = defaultdict(list)
        self._image_flops: dict[tuple[int, ...], dict[str, float]] = {}
        self.region_flops: dict[str, float] = {}

    def count_region_flops(
        self, normed: Tensor, boxes: Tensor, features: Tensor | None = None, rois: Tensor | None = None
    ) -> None:
        """Per-region FLOPs of R-CNN's network (on the normalised image) or, given conv5_3 ``features`` and the
        resized ``rois``, of the two RoI heads: counted on ``flop_sample`` regions and divided (also a warm-up)."""
        net, k = self.net, max(1, self.cfg.flop_sample)
        if features is None:
            crops = warp_regions(normed, boxes[:k], self.cfg.crop_size, self.cfg.context_padding)
            self.region_flops["rcnn"] = count_flops(lambda: net.rcnn_head(net.rcnn_conv(crops))) / len(crops)
            return
        sample = [rois[:k]]
        self.region_flops["fast_rcnn"] = count_flops(net.head, features, sample) / len(sample[0])
        if net.svd_head is not None:
            self.region_flops["fast_rcnn_svd"] = count_flops(net.svd_head, features, sample) / len(sample[0])

    def image_flops(self, image_list: ImageList) -> dict[str, float]:
        """FLOPs of conv1_1 ... conv5_3 and of the RPN on this (resized, padded) image size, counted once per size."""
        key = tuple(image_list.tensors.shape)
        if key not in self._image_flops:
            with FlopCounterMode(display=False) as conv:
                features = self.net.conv(image_list.tensors)
            with FlopCounterMode(display=False) as rpn:
                self.net.rpn(image_list, {"0": features})
            self._image_flops[key] = {"conv": float(conv.get_total_flops()), "rpn": float(rpn.get_total_flops())}
        return self._image_flops[key]

    def run(self, image: Tensor) -> None:
        cfg, net, clock = self.cfg, self.net, self.clock
        boxes, ss_s = clock(self.search, image.cpu())
        boxes = boxes.to(self.device)
        image = image.to(self.device)
        self._rcnn(image, boxes, ss_s)
        # Fast R-CNN: one conv5_3 pass on the 600 px image; the SVD row and Faster R-CNN run the same pass on
        # the same image, so it is measured once and their rows share it.
        (image_list, rois), transform_s = clock(self._transform, image, boxes)
        flops = self.image_flops(image_list)
        features, conv_s = clock(net.conv, image_list.tensors)
        if "fast_rcnn" not in self.region_flops:
            self.count_region_flops(image, boxes, features, rois)
        size = image_list.image_sizes[0]
        shared = {"transform_s": transform_s, "conv_s": conv_s}
        heads = [("fast_rcnn", net.head)] + ([("fast_rcnn_svd", net.svd_head)] if net.svd_head is not None else [])
        for name, head in heads:
            (logits, deltas), head_s = clock(head, features, [rois])
            _, nms_s = clock(_decode, net, logits, deltas, rois, size, cfg)
            self.per_image[name].append(
                {
                    **shared,
                    "proposal_s": ss_s,
                    "head_s": head_s,
                    "nms_s": nms_s,
                    "num_proposals": len(rois),
                    "regions_run": len(rois),
                    "gflops": (flops["conv"] + self.region_flops[name] * len(rois)) / 1e9,
                }
            )
        proposals, rpn_s = clock(lambda: net.rpn(image_list, {"0": features})[0][0])
        (logits, deltas), head_s = clock(net.head, features, [proposals])
        _, nms_s = clock(_decode, net, logits, deltas, proposals, size, cfg)
        gflops = (flops["conv"] + flops["rpn"] + self.region_flops["fast_rcnn"] * len(proposals)) / 1e9
        self.per_image["faster_rcnn"].append(
            {
                **shared,
                "proposal_s": rpn_s,
                "head_s": head_s,
                "nms_s": nms_s,
                "num_proposals": len(proposals),
                "regions_run": len(proposals),
                "gflops": gflops,
            }
        )

    def _transform(self, image: Tensor, boxes: Tensor) -> tuple[ImageList, Tensor]:
        image_list = self.net.transform([image])[0]
        return image_list, resize_boxes(boxes, tuple(image.shape[-2:]), image_list.image_sizes[0])

    def _rcnn(self, image: Tensor, boxes: Tensor, ss_s: float) -> None:
        """R-CNN on the first ``rcnn_regions`` boxes in batches; per-region stages scaled to all boxes."""
        cfg, net, clock = self.cfg, self.net, self.clock
        n = len(boxes)
        if n == 0:
            raise ValueError("Selective Search found no box in this image")
        run = n if cfg.rcnn_regions is None else min(n, cfg.rcnn_regions)
        times: dict[str, float] = defaultdict(float)
        normed, times["transform_s"] = clock(normalize, image)
        if "rcnn" not in self.region_flops:
            self.count_region_flops(normed, boxes)
        logits, deltas = [], []
        for chunk in boxes[:run].split(max(1, cfg.rcnn_batch)):
            crops, warp_s = clock(warp_regions, normed, chunk, cfg.crop_size, cfg.context_padding)
            pool5, conv_s = clock(net.rcnn_conv, crops)
            (scores, moves), head_s = clock(net.rcnn_head, pool5)
            scale = n / run
            times["transform_s"] += warp_s * scale
            times["conv_s"] += conv_s * scale
            times["head_s"] += head_s * scale
            logits.append(scores)
            deltas.append(moves)
        # NMS over all n boxes: the scores of the regions run, repeated for the others (random weights give
        # near-uniform scores either way).
        index = torch.arange(n, device=boxes.device) % run
        all_logits, all_deltas = torch.cat(logits)[index], torch.cat(deltas)[index]
        _, times["nms_s"] = clock(_decode, net, all_logits, all_deltas, boxes, tuple(image.shape[-2:]), cfg)
        self.per_image["rcnn"].append(
            {
                **times,
                "proposal_s": ss_s,
                "num_proposals": n,
                "regions_run": run,
                "gflops": self.region_flops["rcnn"] * n / 1e9,
            }
        )


# ------------------------------------------------------------------------------------------- table
def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _rows(bench: _Bench, cfg: PaperScaleConfig, device: torch.device) -> list[dict[str, Any]]:
    names = {
        "rcnn": "R-CNN",
        "fast_rcnn": "Fast R-CNN",
        "fast_rcnn_svd": "Fast R-CNN + SVD",
        "faster_rcnn": "Faster R-CNN",
    }
    rows = []
    for model in MODELS:
        images = bench.per_image.get(model)
        if not images:
            continue
        row: dict[str, Any] = {"model": model, "name": names[model], "device": str(device), "images": len(images)}
        for key in (*STAGES, "num_proposals", "regions_run", "gflops"):
            row[key] = _mean([im[key] for im in images])
        row["num_proposals_min"] = int(min(im["num_proposals"] for im in images))
        row["num_proposals_max"] = int(max(im["num_proposals"] for im in images))
        row["proposal_method"] = "RPN" if model == "faster_rcnn" else f"Selective Search ({cfg.proposal_mode})"
        row["total_s"] = sum(row[k] for k in STAGES)
        row["without_proposals_s"] = row["total_s"] - row["proposal_s"]
        network_s = row["conv_s"] + row["head_s"] + (row["proposal_s"] if model == "faster_rcnn" else 0.0)
        row["network_gflop_per_s"] = row["gflops"] / network_s if network_s > 0 else float("nan")
        row["gflops_per_region"] = bench.region_flops.get(model if model != "faster_rcnn" else "fast_rcnn", 0.0) / 1e9
        row["scaled"] = model == "rcnn" and row["regions_run"] < row["num_proposals"]
        pub = PUBLISHED.get(model, {})
        row["published_with_s"], row["published_without_s"] = pub.get("with"), pub.get("without")
        row["published_source"] = pub.get("source", "")
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if abs(v) >= 0.1 else f"{v:.3f}"


def _markdown(rows: list[dict[str, Any]], cfg: PaperScaleConfig, sizes: list[tuple[int, int]], source: str) -> str:
    by = {r["model"]: r for r in rows}
    cols = [
        ("name", "model"),
        ("proposal_method", "proposals"),
        ("proposals_cell", "boxes / image"),
        ("proposal_s", "proposals s"),
        ("transform_s", "resize / warp s"),
        ("conv_s", "conv s"),
        ("head_s", "region-wise s"),
        ("nms_s", "NMS s"),
        ("total_s", "s / image"),
        ("without_proposals_s", "s / image without proposals"),
        ("gflops", "GFLOPs"),
        ("network_gflop_per_s", "network GFLOP/s"),
        ("published_with_s", "published s / image"),
        ("published_without_s", "published without proposals"),
    ]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cell = f"{r['num_proposals']:,.0f}"
        if r["num_proposals_min"] != r["num_proposals_max"]:
            cell += f" ({r['num_proposals_min']:,}-{r['num_proposals_max']:,})"
        if r["scaled"]:
            cell += f", {r['regions_run']:.0f} run"
        r = dict(r, proposals_cell=cell)
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    device = rows[0]["device"] if rows else "?"
    shown = ", ".join(f"{w}x{h}" for w, h in sizes)
    notes = [
        "",
        f"VGG16 at random init (timing and FLOPs do not depend on the weights), {len(sizes)} {source} ({shown}), "
        f"device {device}, {torch.get_num_threads()} torch threads; Selective Search on the CPU. Fast / Faster "
        f"R-CNN at shorter side {cfg.min_size} (longer <= {cfg.max_size}); R-CNN warps to {cfg.crop_size} px "
        f"with {cfg.context_padding:g} px context. Means over the images.",
    ]
    rc = by.get("rcnn")
    if rc and rc["scaled"]:
        notes.append(
            f"R-CNN ran the first {rc['regions_run']:.0f} boxes of each image in batches of {cfg.rcnn_batch}; "
            "its warp, conv and region-wise times are scaled to the full box count."
        )
    notes.append(
        "Fast R-CNN, its SVD row and Faster R-CNN share one measured resize + conv5_3 pass per image (the "
        "same computation); Faster R-CNN's proposals column is its RPN. GFLOPs: torch's FlopCounterMode "
        "(convolutions and matrix products); per-region parts counted on a few regions and multiplied."
    )
    fast, svd, faster = by.get("fast_rcnn"), by.get("fast_rcnn_svd"), by.get("faster_rcnn")
    if rc and fast:
        notes.append(
            f"- R-CNN / Fast R-CNN without proposals: {rc['without_proposals_s'] / fast['without_proposals_s']:.0f}x "
            f"(papers: 47 / 0.32 = 146x); in arithmetic {rc['gflops'] / fast['gflops']:.0f}x "
            f"({rc['gflops_per_region']:.1f} GFLOPs per warped region x {rc['num_proposals']:,.0f} regions against "
            f"{fast['gflops']:,.0f} GFLOPs for one conv5_3 pass and the RoI head)."
        )
    if fast and faster:
        notes.append(
            f"- Fast R-CNN with Selective Search / Faster R-CNN: {fast['total_s'] / faster['total_s']:.1f}x "
            f"(papers: 1.83 / 0.198 = 9.2x). Of Fast R-CNN's {_fmt(fast['total_s'])} s, Selective Search takes "
            f"{_fmt(fast['proposal_s'])} s, conv5_3 {_fmt(fast['conv_s'])} s and the head on "
            f"{fast['num_proposals']:,.0f} RoIs {_fmt(fast['head_s'])} s (K40: 1.51 / 0.146 / 0.174 s); Faster "
            f"R-CNN's RPN {_fmt(faster['proposal_s'])} s and head on {faster['num_proposals']:.0f} RoIs "
            f"{_fmt(faster['head_s'])} s (K40: 0.010 / 0.047 s)."
        )
    if fast and svd:
        notes.append(
            f"- Truncated SVD (fc6 rank {cfg.svd_ranks[0]}, fc7 rank {cfg.svd_ranks[1]}): region-wise "
            f"{fast['head_s'] / svd['head_s']:.1f}x faster, "
            f"{fast['without_proposals_s'] / svd['without_proposals_s']:.2f}x "
            f"overall without proposals (paper: 0.32 -> 0.22 s, 1.45x)."
        )
    return "\n".join(lines + notes)


def paper_scale_table(
    images: Sequence[Tensor] | None = None,
    num_images: int = 3,
    device: str | torch.device = "cpu",
    config: PaperScaleConfig | None = None,
    tiles: tuple[int, int] = (8, 6),
    **overrides: Any,
) -> tuple[list[dict[str, Any]], str]:
    """Time R-CNN, Fast R-CNN (+ truncated SVD) and Faster R-CNN at the papers' scale.

    Args:
        images: 3 x H x W float images in [0, 1]; None renders ``num_images`` 500 x 375 mosaics of ``tiles``
            scenes (:func:`generated_images`).
        device: where the networks run (Selective Search always runs on the CPU).
        config, overrides: :class:`PaperScaleConfig` and field overrides.

    Returns:
        One row per model (keys: ``model``, ``num_proposals``, ``regions_run``, the stage times ``proposal_s``,
        ``transform_s``, ``conv_s``, ``head_s``, ``nms_s``, ``total_s``, ``without_proposals_s``, ``gflops``,
        ``gflops_per_region``, the published figures ...) and the Markdown table with its notes.
    """
    cfg = PaperScaleConfig(**{**asdict(config or PaperScaleConfig()), **overrides})
    device = torch.device(device)
    source = "given images" if images is not None else f"generated images (mosaics of {tiles[0]} x {tiles[1]} scenes)"
    images = list(images) if images is not None else generated_images(num_images, seed=cfg.seed, tiles=tiles)
    torch.manual_seed(cfg.seed)
    with torch.inference_mode():
        net = PaperNetworks(cfg).eval().to(device)
        bench = _Bench(net, cfg, device)
        for image in images:
            bench.run(image)
    rows = _rows(bench, cfg, device)
    sizes = [(int(im.shape[-1]), int(im.shape[-2])) for im in images]
    return rows, _markdown(rows, cfg, sizes, source)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", help="folder of photos (default: generated 500 x 375 scenes)")
    parser.add_argument("--num-images", type=int, default=3)
    parser.add_argument("--tiles", default="8x6", help="generated images: COLSxROWS scenes per mosaic")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-proposals", type=int, default=2000)
    parser.add_argument("--proposal-mode", choices=("fast", "quality"), default="fast")
    parser.add_argument("--rcnn-regions", type=int, default=32, help="regions R-CNN runs per image (0: all)")
    parser.add_argument("--rcnn-batch", type=int, default=32)
    parser.add_argument("--rpn-proposals", type=int, default=300)
    parser.add_argument("--min-size", type=int, default=600)
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--no-svd", action="store_true", help="leave out the truncated-SVD row")
    parser.add_argument("--svd-init", choices=("random", "exact"), default="random")
    parser.add_argument("--out", help="folder for paper_scale.md and paper_scale.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    images = load_images(args.images, args.num_images) if args.images else None
    tiles = tuple(int(v) for v in args.tiles.lower().split("x"))
    rows, markdown = paper_scale_table(
        images,
        args.num_images,
        args.device,
        tiles=tiles,
        max_proposals=args.max_proposals,
        proposal_mode=args.proposal_mode,
        rcnn_regions=args.rcnn_regions or None,
        rcnn_batch=args.rcnn_batch,
        rpn_proposals=args.rpn_proposals,
        min_size=args.min_size,
        max_size=args.max_size,
        svd_ranks=None if args.no_svd else (1024, 256),
        svd_init=args.svd_init,
    )
    markdown += f"\n\nWall time of the whole table: {time.perf_counter() - start:.0f} s."
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "paper_scale.md").write_text(markdown + "\n", encoding="utf-8")
        (out / "paper_scale.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
