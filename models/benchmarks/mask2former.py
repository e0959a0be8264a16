"""GenEval's detector family through transformers: Mask2Former (Mask2FormerForUniversalSegmentation) with a
COCO instance-segmentation checkpoint, as the official evaluation runs mmdetection's Mask2Former Swin-S.

The official script keeps, per class, the instances above the task's confidence (0.3, counting 0.9), most
confident first, at most 16, with no NMS, and takes each box from its instance's mask; models.benchmarks
.geneval applies those rules to the Detections made here. Class ids are COCO's 80 in their usual order,
named as GenEval names them (its object_names.txt: `computer mouse`, `tv remote`, `computer keyboard`
where COCO says mouse, remote, keyboard)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from models.shapes.verify import Detection

from .common import local_weights, pretrained_kwargs

COCO_NAMES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "computer mouse",
    "tv remote",
    "computer keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

MIN_SCORE = 0.0  # every instance goes to the rules, which apply GenEval's own thresholds


def instance_detections(result: dict[str, Any], names: tuple[str, ...], classes: list[str]) -> list[Detection]:
    """Detections of `classes` from one image's post_process_instance_segmentation result (binary maps):
    class = names[label_id], score = the instance's, box = its mask's extent (x1, y1 exclusive, as mmdet's
    mask2bbox), mask kept for GenEval's color crop."""
    maps = result["segmentation"]
    found = []
    for i, info in enumerate(result["segments_info"]):
        cls = names[int(info["label_id"])] if int(info["label_id"]) < len(names) else None
        if cls not in classes:
            continue
        mask = maps[i].bool().cpu().numpy()
        ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        found.append(Detection(cls, box, float(info["score"]), mask=mask))
    return found


class Mask2FormerDetector:
    """`Detector` over Mask2FormerForUniversalSegmentation and its image processor (a COCO instance checkpoint,
    e.g. facebook/mask2former-swin-small-coco-instance)."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        what = "GenEval detector: Mask2Former weights (Mask2FormerForUniversalSegmentation + its image processor)"
        folder = local_weights(path, what)
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation  # after the check: slow

        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.model = (
            Mask2FormerForUniversalSegmentation.from_pretrained(folder, **pretrained_kwargs()).to(device).eval()
        )
        self.device = device
        labels = self.model.config.id2label
        # A COCO instance checkpoint has COCO's 80 classes in order: GenEval's names for them; else the config's.
        self.names = COCO_NAMES if len(labels) == len(COCO_NAMES) else tuple(labels[i] for i in range(len(labels)))

    @torch.no_grad()
    def detect(self, image: Image.Image, classes: list[str]) -> list[Detection]:
        """Every instance of `classes` in the image, with its score, box (pixels) and mask."""
        image = image.convert("RGB")
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=MIN_SCORE, target_sizes=[image.size[::-1]], return_binary_maps=True
        )[0]
        if result["segmentation"] is None or not result["segments_info"]:
            return []
        return instance_detections(result, self.names, classes)
