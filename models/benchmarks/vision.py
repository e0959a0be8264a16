"""The transformers models behind the benchmark scorers, each loaded from a folder with from_pretrained:
OWLv2 (open-vocabulary detector), CLIP (image/text embeddings, GenEval's zero-shot color classifier,
T2I-CompBench's CLIP similarity) and BLIP-VQA (T2I-CompBench's attribute questions).

The benchmarks import this module lazily, when they first load a model; it imports none of them (the
color vocabulary is the caller's: GenEval passes geneval.GENEVAL_COLORS). A missing weights folder
is a FileNotFoundError naming the weights (common.local_weights)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from PIL import Image

from models.shapes.verify import Detection

from .common import local_weights, pretrained_kwargs

log = logging.getLogger(__name__)

# GenEval's color prompts, averaged per color, and the gray it pastes a masked object onto before cropping.
COLOR_TEMPLATES = ("a photo of a {color} {cls}", "a photo of a {color}-colored {cls}", "a photo of a {color} object")
MASK_BACKGROUND = (153, 153, 153)


def _features(out: object) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]


class Owlv2Detector:
    """`Detector` over Owlv2ForObjectDetection, text queries = class names.

    OWLv2 predicts one box per image patch, so one object yields many overlapping boxes; GenEval's
    Mask2Former needed no NMS (its max_overlap is 1.0) but OWLv2 does, hence per-class NMS here.
    Detections below `min_score` are dropped early; GenEval's own thresholds (0.3 / 0.9) are higher."""

    def __init__(self, path: str, device: str = "cpu", min_score: float = 0.1, nms_iou: float = 0.5) -> None:
        folder = local_weights(path, "detector: OWLv2 weights (Owlv2ForObjectDetection + Owlv2Processor)")
        from transformers import Owlv2ForObjectDetection, Owlv2Processor  # after the check: a slow import

        self.processor = Owlv2Processor.from_pretrained(folder)
        self.model = Owlv2ForObjectDetection.from_pretrained(folder, **pretrained_kwargs()).to(device).eval()
        self.device, self.min_score, self.nms_iou = device, min_score, nms_iou
        # Query length is the text tower's, whatever the saved tokenizer's model_max_length says.
        self.max_text = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def detect(self, image: Image.Image, classes: list[str]) -> list[Detection]:
        """Objects of `classes` in the image: boxes in pixels of the image, clipped to it; score in [0, 1]."""
        from torchvision.ops import batched_nms

        if not classes:
            return []
        image = image.convert("RGB")
        inputs = self.processor(
            text=[classes],
            images=image,
            return_tensors="pt",
            padding="max_length",
            max_length=self.max_text,
            truncation=True,
        ).to(self.device)
        outputs = self.model(**inputs)
        # The processor pads the image to a square at the bottom/right, so boxes are relative to that square.
        side = max(image.size)
        res = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.min_score, target_sizes=[(side, side)]
        )[0]
        boxes, scores, labels = res["boxes"].float().cpu(), res["scores"].float().cpu(), res["labels"].cpu()
        w, h = image.size
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = batched_nms(boxes, scores, labels, self.nms_iou)
        return [
            Detection(classes[int(labels[i])], tuple(float(v) for v in boxes[i]), float(scores[i]))  # type: ignore[arg-type]
            for i in keep.tolist()
        ]


class ClipEncoder:
    """Normalized CLIP image and text embeddings (transformers CLIPModel + CLIPProcessor)."""

    def __init__(self, path: str, what: str = "CLIP", device: str = "cpu") -> None:
        folder = local_weights(path, f"{what} weights (CLIPModel + CLIPProcessor)")
        from transformers import CLIPModel, CLIPProcessor

        self.processor = CLIPProcessor.from_pretrained(folder)
        self.model = CLIPModel.from_pretrained(folder, **pretrained_kwargs()).to(device).eval()
        self.device = device
        self.max_text = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) float32 unit-norm embeddings of N images."""
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        feats = _features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(N, D) float32 unit-norm embeddings of N texts, truncated to the text tower's length (with a warning)."""
        too_long = sum(len(self.processor.tokenizer(t)["input_ids"]) > self.max_text for t in texts)
        if too_long:  # CLIP cannot see past its limit; say so rather than truncate quietly
            log.warning("CLIP text: %d of %d texts truncated to %d tokens", too_long, len(texts), self.max_text)
        tok = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_text)
        feats = _features(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        )
        return torch.nn.functional.normalize(feats.float(), dim=-1)

    def similarity(self, image: Image.Image, text: str) -> float:
        """Cosine similarity of the image and text embeddings (no logit scale)."""
        return float((self.image_features([image]) @ self.text_features([text]).T).item())


def crop_object(image: Image.Image, det: Detection) -> Image.Image:
    """The detection's box crop; with a mask, the object pasted on GenEval's gray first, as GenEval does."""
    image = image.convert("RGB")
    if det.mask is not None:
        mask = Image.fromarray(np.asarray(det.mask, dtype=bool).astype(np.uint8) * 255)
        image = Image.composite(image, Image.new("RGB", image.size, MASK_BACKGROUND), mask)
    w, h = image.size
    x0 = min(max(math.floor(det.box[0]), 0), w - 1)
    y0 = min(max(math.floor(det.box[1]), 0), h - 1)
    # At least one pixel: a degenerate box must not become an empty crop that the processor rejects.
    x1 = min(max(math.ceil(det.box[2]), x0 + 1), w)
    y1 = min(max(math.ceil(det.box[3]), y0 + 1), h)
    return image.crop((x0, y0, x1, y1))


class ClipColorClassifier:
    """`ColorClassifier`: CLIP zero-shot over `colors` (GenEval's ten for GenEval), one text head per class
    name, as GenEval's color check does."""

    def __init__(self, encoder: ClipEncoder, colors: tuple[str, ...]) -> None:
        self.encoder, self.colors = encoder, colors
        self._heads: dict[str, torch.Tensor] = {}

    def head(self, classname: str) -> torch.Tensor:
        """(len(colors), D) unit-norm text embeddings of "<color> <classname>", templates averaged; cached."""
        if classname not in self._heads:
            texts = [t.format(color=c, cls=classname) for c in self.colors for t in COLOR_TEMPLATES]
            feats = self.encoder.text_features(texts).reshape(len(self.colors), len(COLOR_TEMPLATES), -1)
            self._heads[classname] = torch.nn.functional.normalize(feats.mean(1), dim=-1)  # template ensemble
        return self._heads[classname]

    def classify(self, image: Image.Image, detections: list[Detection], classname: str) -> list[str]:
        """The nearest color to each detection's crop (crop_object), one per detection."""
        if not detections:
            return []
        feats = self.encoder.image_features([crop_object(image, d) for d in detections])
        best = (feats @ self.head(classname).T).argmax(dim=1)
        return [self.colors[int(i)] for i in best]


class BlipVqa:
    """`vqa_yes_probability` over BlipForQuestionAnswering: the answers "yes" and "no" are each scored by
    the answer decoder (sum of token log-probabilities, BLIP's rank-based answering restricted to the two
    candidates), and P(yes) is the softmax of the two."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        folder = local_weights(path, "attribute VQA: BLIP weights (BlipForQuestionAnswering + BlipProcessor)")
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self.processor = BlipProcessor.from_pretrained(folder)
        self.model = BlipForQuestionAnswering.from_pretrained(folder, **pretrained_kwargs()).to(device).eval()
        self.device = device

    def _answer_logprob(self, question_states: torch.Tensor, question_mask: torch.Tensor, answer: str) -> torch.Tensor:
        ids = self.processor.tokenizer(answer, return_tensors="pt")["input_ids"].to(self.device)
        ids[:, 0] = self.model.decoder_start_token_id  # the decoder starts from BLIP's [DEC], not [CLS]
        logits = self.model.text_decoder(
            input_ids=ids, encoder_hidden_states=question_states, encoder_attention_mask=question_mask
        ).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        return logp.gather(-1, ids[:, 1:, None]).sum()

    @torch.no_grad()
    def vqa_yes_probability(self, image: Image.Image, question: str) -> float:
        """P(yes) in [0, 1] against "no" for one yes/no question about the image."""
        inputs = self.processor(images=image.convert("RGB"), text=question, return_tensors="pt").to(self.device)
        image_states = self.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        image_mask = torch.ones(image_states.shape[:-1], dtype=torch.long, device=self.device)
        question_states = self.model.text_encoder(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image_states,
            encoder_attention_mask=image_mask,
        ).last_hidden_state
        both = torch.stack([self._answer_logprob(question_states, inputs["attention_mask"], a) for a in ("yes", "no")])
        return float(torch.softmax(both, dim=0)[0])


class DepthModel:
    """`DepthEstimator` over a transformers depth model (AutoModelForDepthEstimation: DPT, Depth Anything),
    whose predicted_depth is relative inverse depth, resized to the image."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        folder = local_weights(path, "3d_spatial: depth model weights (AutoModelForDepthEstimation + processor)")
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.model = AutoModelForDepthEstimation.from_pretrained(folder, **pretrained_kwargs()).to(device).eval()
        self.device = device

    @torch.no_grad()
    def inverse_depth(self, image: Image.Image) -> np.ndarray:
        """(H, W) float array for the image, larger = nearer."""
        image = image.convert("RGB")
        out = self.model(**self.processor(images=image, return_tensors="pt").to(self.device))
        depth = self.processor.post_process_depth_estimation(out, target_sizes=[image.size[::-1]])[0]
        return depth["predicted_depth"].float().cpu().numpy()
