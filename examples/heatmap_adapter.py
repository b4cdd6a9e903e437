"""A top-down heatmap model as a kpbench crop model: a small HRNet-style network (Sun et al., "Deep High-Resolution
Representation Learning for Human Pose Estimation", CVPR 2019: a high-resolution branch kept throughout, a
lower-resolution branch beside it, exchanging features at each stage) that maps a 256 x 192 person crop to 17
heatmaps at a quarter of the crop's resolution.

Its weights are random (seeded) unless `--weights PATH` names a state dict: it shows the interface, and the tests run
it through the whole top-down path. To reproduce a published number, put the real network and its checkpoint here
(or wrap mmpose's / HRNet's model the same way) and run, e.g.:

    kpbench run --model examples/heatmap_adapter.py:HeatmapCropModel --weights hrnet_w32.pth \
        --person-boxes COCO_val2017_detections_AP_H_56_person.json --flip-test --rescore keypoint-mean --nms oks
"""

from __future__ import annotations

import torch
from torch import nn

from kpbench.core.schema import COCO17
from kpbench.models.base import ModelInfo
from kpbench.models.topdown import CropBatch, CropOutput

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, as HRNet normalises
STD = (0.229, 0.224, 0.225)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class TinyHRNet(nn.Module):
    """Stem (two stride-2 convolutions: 1/4 resolution), then stages of a high- and a low-resolution branch that
    exchange features (upsampled / strided), and a 1 x 1 head to K heatmaps at the high resolution."""

    def __init__(self, num_keypoints: int = 17, width: int = 16, stages: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(_block(3, width, 2), _block(width, width, 2))
        self.down = _block(width, 2 * width, 2)
        self.high = nn.ModuleList(_block(width, width) for _ in range(stages))
        self.low = nn.ModuleList(_block(2 * width, 2 * width) for _ in range(stages))
        self.low_to_high = nn.ModuleList(nn.Conv2d(2 * width, width, 1) for _ in range(stages))
        self.high_to_low = nn.ModuleList(nn.Conv2d(width, 2 * width, 3, 2, 1) for _ in range(stages))
        self.head = nn.Conv2d(width, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = self.stem(x)
        low = self.down(high)
        for h, lo, l2h, h2l in zip(self.high, self.low, self.low_to_high, self.high_to_low):
            high, low = h(high), lo(low)
            up = nn.functional.interpolate(l2h(low), size=high.shape[-2:], mode="nearest")
            high, low = high + up, low + h2l(high)
        return self.head(high)


class HeatmapCropModel:
    """kpbench's crop-model interface over TinyHRNet: crops come as float (M, 3, 256, 192) tensors in [0, 1] on the
    device; heatmaps go back, and kpbench decodes them, flips them for the flip test and maps the keypoints back."""

    schema = COCO17
    crop_size = (192, 256)  # (width, height)
    input_format = "tensor"
    # How HRNet and mmpose (non-UDP) train: a pixel's index is its coordinate, heatmap pixel j is crop j * 4, and
    # their decoding rule (kpbench.models.crops). Both are the defaults; said here because a checkpoint needs them.
    pixel_convention = "index"
    heatmap_refinement = "hrnet"

    def __init__(self, weights: str | None = None, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = TinyHRNet(self.schema.num_keypoints).eval()
        if weights is not None:
            self.net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.weights, self.seed = weights, seed
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)

    def to(self, device: torch.device) -> None:
        self.net.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def info(self) -> ModelInfo:
        return ModelInfo(weights=self.weights or "none", source="checkpoint" if self.weights else "random",
                         seed=None if self.weights else self.seed, name="tiny-hrnet",
                         keypoint_score_kind="probability")  # heatmap maxima, trained towards 1 at a keypoint

    def predict_crops(self, batch: CropBatch) -> CropOutput:
        return CropOutput(heatmaps=self.net((batch.images - self.mean) / self.std))
