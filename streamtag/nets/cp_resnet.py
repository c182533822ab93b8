"""Receptive-field-regularized ResNets of CP-JKU: CP-ResNet, frequency-aware and Shake-Shake."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CPResNet", "kernel_plan"]

STAGE_CHANNELS = (1, 2, 4)  # multiples of base_channels
BLOCKS_PER_STAGE = 4
STAGE1_POOL_AFTER = (1, 2, 4)  # 2×2 max-pool after these blocks (1-based) of stage 1

Kernel = tuple[int, int]


def kernel_plan(rho: int, rho_t: int | None = None) -> list[tuple[Kernel, Kernel]]:
    """Kernel sizes ``(k1, k2)`` of the two convolutions of each of the 12 blocks, as (freq, time).

    The CP-JKU rule (Koutini et al. 2019): the first block is always 3×3 then 1×1; the following
    22 convolutions, numbered p = 1, 2, ..., get size 3 along an axis while p <= rho for that axis
    (``rho`` for frequency, ``rho_t`` for time) and size 1 after. Each 3 adds to the receptive
    field, so rho caps it; rho = 7 ends the 3×3 layers with the first conv of stage 2.
    """
    if rho_t is None:
        rho_t = rho
    if rho < 0 or rho_t < 0:
        raise ValueError(f"rho and rho_t must be >= 0, got {rho} and {rho_t}")
    plan: list[tuple[Kernel, Kernel]] = [((3, 3), (1, 1))]
    p = 0
    for _ in range(len(STAGE_CHANNELS) * BLOCKS_PER_STAGE - 1):
        pair = []
        for _ in range(2):
            p += 1
            pair.append((3 if p <= rho else 1, 3 if p <= rho_t else 1))
        plan.append((pair[0], pair[1]))
    return plan


class FreqAwareConv2d(nn.Module):
    """A convolution that also sees the frequency position as one more input channel.

    The extra channel runs linearly from -1 (lowest bin) to 1 (highest bin) of this layer's input,
    so that filters with a small receptive field still know where in the spectrum they are.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: Kernel) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, freq, frames = x.shape
        position = torch.linspace(-1.0, 1.0, freq, dtype=x.dtype, device=x.device)
        position = position.view(1, 1, freq, 1).expand(batch, 1, freq, frames)
        return self.conv(torch.cat([x, position], dim=1))


def _conv(in_channels: int, out_channels: int, kernel: Kernel, frequency_aware: bool) -> nn.Module:
    if frequency_aware:
        return FreqAwareConv2d(in_channels, out_channels, kernel)
    padding = (kernel[0] // 2, kernel[1] // 2)
    return nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False)


class _Branch(nn.Module):
    """conv k1, batch norm, ReLU, conv k2, batch norm."""

    def __init__(
        self, in_channels: int, out_channels: int, k1: Kernel, k2: Kernel, frequency_aware: bool
    ) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, k1, frequency_aware)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv(out_channels, out_channels, k2, frequency_aware)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


def shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """Shake-Shake mix of two branches (Gastaldi 2017), one random weight per sample.

    Training: the forward pass computes ``alpha*a + (1-alpha)*b`` while gradients flow as for
    ``beta*a + (1-beta)*b``, with alpha and beta drawn independently from U(0, 1). The detached
    term carries the difference, so no custom autograd function is needed and TorchScript
    compiles it. Evaluation: the plain mean.
    """
    if not training:
        return 0.5 * (a + b)
    shape = [a.size(0), 1, 1, 1]
    alpha = torch.rand(shape, dtype=a.dtype, device=a.device)
    beta = torch.rand(shape, dtype=a.dtype, device=a.device)
    return beta * a + (1.0 - beta) * b + ((alpha - beta) * (a - b)).detach()


class BasicBlock(nn.Module):
    """Residual block: one branch, or two Shake-Shake branches; 1×1 projection when the width
    changes; ReLU after the addition."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        k1: Kernel,
        k2: Kernel,
        frequency_aware: bool,
        shake_shake: bool,
    ) -> None:
        super().__init__()
        self.shake_shake = shake_shake
        self.branch1 = _Branch(in_channels, out_channels, k1, k2, frequency_aware)
        self.branch2 = (
            _Branch(in_channels, out_channels, k1, k2, frequency_aware)
            if shake_shake
            else nn.Identity()
        )
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch1(x)
        if self.shake_shake:
            y = shake(y, self.branch2(x), self.training)
        return F.relu(y + self.shortcut(x))


class CPResNet(nn.Module):
    """Receptive-field-regularized ResNet (CP-ResNet) of Koutini et al. (CP-JKU), with variants.

    "Receptive-Field-Regularized CNN Variants for Acoustic Scene Classification" (DCASE 2019) and
    "Emotion and Theme Recognition in Music with Frequency-Aware RF-Regularized CNNs" (MediaEval
    2019). A 5×5 stride-2 convolution with 128 channels, batch norm and ReLU; three stages of four
    basic blocks with 128, 256, 512 channels, 2×2 max-pooling after blocks 1, 2 and 4 of stage 1;
    block kernels (3 or 1 per axis) from ``kernel_plan(rho, rho_t)``; then a 1×1 convolution to
    the tags, batch norm and global average pooling, which gives the logits. No convolution has
    a bias (batch norm follows each).

    Variants (registry names):

    - ``cp_resnet``: as above.
    - ``fa_resnet`` (``frequency_aware=True``): every convolution inside the blocks gets one more
      input channel with the frequency position (``FreqAwareConv2d``), as in the authors' code;
      the stem, the 1×1 projections and the head do not.
    - ``shake_fa_resnet`` (also ``shake_shake=True``): every block has two such branches mixed by
      Shake-Shake (``shake``).

    Input: ``(batch, n_mels, frames)``, default 256 × 862 (256 perceptually weighted mel bins,
    10 s at 44.1 kHz with hop 512). Fully convolutional: any window of at least 17 × 17 works.

    Options: ``rho`` (5), ``rho_t`` (None: same as rho), ``base_channels`` (128).
    """

    input_kind = "logmel"
    default_input = (256, 862)
    min_input = (17, 17)

    def __init__(
        self,
        n_tags: int,
        rho: int = 5,
        rho_t: int | None = None,
        base_channels: int = 128,
        frequency_aware: bool = False,
        shake_shake: bool = False,
    ) -> None:
        super().__init__()
        plan = kernel_plan(rho, rho_t)
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_channels, 5, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(),
        )
        stages: list[nn.Sequential] = []
        in_channels = base_channels
        for stage, multiple in enumerate(STAGE_CHANNELS):
            out_channels = base_channels * multiple
            layers: list[nn.Module] = []
            for index in range(BLOCKS_PER_STAGE):
                k1, k2 = plan[stage * BLOCKS_PER_STAGE + index]
                layers.append(
                    BasicBlock(in_channels, out_channels, k1, k2, frequency_aware, shake_shake)
                )
                in_channels = out_channels
                if stage == 0 and index + 1 in STAGE1_POOL_AFTER:
                    layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
        self.stage1, self.stage2, self.stage3 = stages
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, n_tags, 1, bias=False),
            nn.BatchNorm2d(n_tags),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.unsqueeze(1))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(x).mean(dim=(2, 3))

    def rf_path(self) -> list[nn.Module]:
        """Convolutions and pools along the longest path (for ``receptive_field``): the stem,
        the first branch of every block (the 1×1 projections add nothing), the pools, the head."""
        path: list[nn.Module] = [self.stem[0]]
        for stage in (self.stage1, self.stage2, self.stage3):
            for m in stage:
                if isinstance(m, BasicBlock):
                    path += [m.branch1.conv1, m.branch1.conv2]
                else:
                    path.append(m)
        path.append(self.head[0])
        return path
