"""The model zoo: one architecture a file, a registry by name.

    >>> from streamtag import nets
    >>> model = nets.build("cp_resnet", n_tags=56, rho=5)
    >>> nets.spec("cp_resnet")["default_input"]
    (256, 862)

Log-mel models take ``(batch, n_mels, frames)`` float32, waveform models ``(batch, samples)``;
all return tag logits ``(batch, n_tags)`` — except ``vqvae``, the autoencoder that the
``vqvae_*`` taggers are pre-trained from, which returns its reconstruction. Every model compiles
with ``torch.jit.script``. ``spec(name)`` tells the input kind and sizes, ``build`` accepts the
options each class documents.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from torch import nn

from .cp_resnet import CPResNet
from .crnn import CRNN
from .lstm import LSTMTagger
from .mel_cnn import MelCNN
from .mobilenet import MobileNetV2Attention, MobileNetV2Tagger, two_head_loss
from .musicnn import MusiCNN, MusicnnPair, MusiCNNVGG
from .samplecnn import SampleCNN
from .short_chunk_resnet import ShortChunkResNet
from .vggish import VGGish
from .vqvae import VQVAE, VQVAECNN, VQVAEGRU

__all__ = [
    "LOSSES",
    "TASKS",
    "WINDOW_REUSE",
    "build",
    "keras_param_count",
    "names",
    "receptive_field",
    "spec",
    "two_head_loss",
]


TASKS = ("tag", "autoencode")
LOSSES = ("bce", "two_head_bce", "vq_reconstruction")
# streamtag.model.window_reuse's schemes
WINDOW_REUSE = ("pooled_columns", "first_block", "frontend_columns", "second_convolution")


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A registry entry: the class, and what a caller needs to know to train and serve it, so
    that no caller compares architecture names.

    ``task``: "tag" (logits per tag; ``streamtag train``) or "autoencode" (reconstruction;
    ``streamtag pretrain``). ``loss``: "bce" (sigmoid cross-entropy on the logits),
    "two_head_bce" (mean of both heads' cross-entropy on ``forward_heads``) or
    "vq_reconstruction" (reconstruction + codebook + commitment, ``forward_vq``).
    ``encoder_from``: the architecture whose pre-trained file its encoder loads from
    (``load_encoder_state_dict``), or None. ``segment_option``: the option naming the frames of
    one segment when the window must be a whole number of segments, or None. ``window_reuse``:
    how overlapping windows share work when served (``streamtag.model.window_reuse``), or None:
    "pooled_columns" (unpadded convolutions and 2×2 max pools: a window takes its second
    convolution's first pooled columns from an earlier window) or "first_block" (a first
    residual block of padded stride-2 convolutions: a window takes that block's output, where
    the padding does not reach it, from an earlier window) or "frontend_columns" (musicnn's
    front end, unpooled over time: a window takes its branches' columns that neither window's
    padding reaches from the window before) or "second_convolution" (musicnn's VGG baseline:
    a window takes its second convolution's output, where the padding does not reach it, from
    an earlier window).
    """

    cls: type[nn.Module]
    description: str
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: str = "tag"
    loss: str = "bce"
    encoder_from: str | None = None
    segment_option: str | None = None
    window_reuse: str | None = None


_REGISTRY: dict[str, _Entry] = {
    "vggish": _Entry(VGGish, "MediaEval 2019 Emotion & Theme baseline, 5-layer VGG-ish FCN"),
    "crnn": _Entry(CRNN, "CRNN (TaiInn/Innsbruck, MediaEval 2019): 4 conv blocks + 2 GRUs"),
    "mobilenet": _Entry(MobileNetV2Tagger, "MobileNetV2 segment tagger (AMLAG, MediaEval 2019)"),
    "mobilenet_attn": _Entry(
        MobileNetV2Attention,
        "MobileNetV2 per segment + self-attention over segments, two heads (AMLAG, MediaEval 2019)",
        loss="two_head_bce", segment_option="segment_frames",
    ),
    "cp_resnet": _Entry(CPResNet, "receptive-field-regularized CP-ResNet (CP-JKU)"),
    "fa_resnet": _Entry(
        CPResNet, "frequency-aware CP-ResNet (CP-JKU, MediaEval 2019)", {"frequency_aware": True}
    ),
    "shake_fa_resnet": _Entry(
        CPResNet,
        "frequency-aware CP-ResNet with Shake-Shake blocks (CP-JKU, MediaEval 2019)",
        {"frequency_aware": True, "shake_shake": True},
    ),
    "vqvae": _Entry(VQVAE, "VQ-VAE autoencoder on log-mel, for pre-training (TaiInn)",
                    task="autoencode", loss="vq_reconstruction"),
    "vqvae_gru": _Entry(VQVAEGRU, "bidirectional-GRU tagger on VQ-VAE codes (TaiInn)",
                        encoder_from="vqvae"),
    "vqvae_cnn": _Entry(VQVAECNN, "small CNN tagger on VQ-VAE codes (TaiInn)",
                        encoder_from="vqvae"),
    "samplecnn": _Entry(SampleCNN, "SampleCNN on raw waveform (Lee et al. 2017), MagnaTagATune"),
    "mel_cnn": _Entry(MelCNN, "4-layer mel-spectrogram CNN, MagnaTagATune reproduction",
                      window_reuse="pooled_columns"),
    "lstm": _Entry(LSTMTagger, "2 bidirectional LSTMs + 3 1-D convs, MagnaTagATune reproduction"),
    "short_chunk_resnet": _Entry(
        ShortChunkResNet, "short-chunk CNN with residual blocks (Won et al. 2020), 3.7 s windows",
        window_reuse="first_block",
    ),
    "musicnn": _Entry(
        MusiCNN, "musicnn (Pons & Serra 2019): timbral + temporal front end, dense mid-end",
        window_reuse="frontend_columns",
    ),
    "musicnn_vgg": _Entry(MusiCNNVGG, "VGG-like baseline published with musicnn, 3 s windows",
                          window_reuse="second_convolution"),
    "musicnn_pair": _Entry(
        MusicnnPair, "two musicnn networks on one input, their tag lists merged (`music`)",
        window_reuse="frontend_columns",
    ),
}


for _name, _declared in _REGISTRY.items():  # a typo in the table fails at import
    if (_declared.task not in TASKS or _declared.loss not in LOSSES
            or _declared.window_reuse not in (None, *WINDOW_REUSE)):
        raise ValueError(f"nets registry entry {_name!r}: task {_declared.task!r}, loss "
                         f"{_declared.loss!r} or window_reuse {_declared.window_reuse!r} unknown; "
                         f"tasks {TASKS}, losses {LOSSES}, window reuse {WINDOW_REUSE}")


def names(task: str | None = None) -> list[str]:
    """Names of the models ``build`` knows; with ``task``, only those of that task."""
    return [n for n, e in _REGISTRY.items() if task is None or e.task == task]


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def _options(entry: _Entry) -> dict[str, Any]:
    parameters = inspect.signature(entry.cls.__init__).parameters
    return {
        key: p.default
        for key, p in parameters.items()
        if key not in ("self", "n_tags") and key not in entry.fixed
    }


def build(name: str, n_tags: int, **options: Any) -> nn.Module:
    """A fresh model ``name`` with ``n_tags`` outputs; ``options`` as its class documents.

    Raises ``ValueError`` for an unknown name and ``TypeError`` for an option the model does not
    have, naming the ones it has.
    """
    entry = _entry(name)
    known = _options(entry)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(known) or '(none)'}"
        )
    if n_tags < 1:
        raise ValueError(f"n_tags must be >= 1, got {n_tags}")
    return entry.cls(n_tags=n_tags, **entry.fixed, **options)


def spec(name: str) -> dict[str, Any]:
    """What a caller needs to feed model ``name``.

    ``input_kind`` ("logmel" or "waveform"), ``default_input`` ((n_mels, frames) or
    (samples,)), ``min_input`` (the smallest window the default options accept),
    ``description`` (one line), ``options`` (name → default), and the declared capabilities
    ``task``, ``loss``, ``encoder_from``, ``segment_option`` and ``window_reuse`` (see the
    registry entry).
    """
    entry = _entry(name)
    return {
        "input_kind": entry.cls.input_kind,
        "default_input": entry.cls.default_input,
        "min_input": entry.cls.min_input,
        "description": entry.description,
        "options": _options(entry),
        "task": entry.task,
        "loss": entry.loss,
        "encoder_from": entry.encoder_from,
        "segment_option": entry.segment_option,
        "window_reuse": entry.window_reuse,
    }


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def keras_param_count(model: nn.Module) -> int:
    """Parameters as Keras's ``model.summary()`` counts them: every parameter, trainable or not,
    plus batch norm's running mean and variance (not PyTorch's ``num_batches_tracked``)."""
    count = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, _BATCH_NORMS) and m.running_mean is not None:
            count += m.running_mean.numel() + m.running_var.numel()
    return count


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return value[0], value[-1]


def receptive_field(model: nn.Module) -> tuple[int, int]:
    """Receptive field (frequency bins, frames) of one position of the model's last feature map.

    Read from the actual layers along the model's longest path (``model.rf_path()``): each
    kernel k with dilation d adds (k - 1) × d × (product of the strides before it). Defined for
    the CP-ResNet family, ``vggish``, ``mel_cnn`` and ``short_chunk_resnet``.
    """
    path = getattr(model, "rf_path", None)
    if path is None:
        raise ValueError(f"receptive_field is not defined for {type(model).__name__}")
    size = [1, 1]
    jump = [1, 1]
    for layer in path():
        conv = getattr(layer, "conv", layer)  # FreqAwareConv2d wraps its Conv2d
        if isinstance(conv, nn.Conv2d):
            kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
        elif isinstance(conv, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride, dilation = conv.kernel_size, conv.stride, getattr(conv, "dilation", 1)
        else:
            raise TypeError(f"unexpected layer on the receptive-field path: {layer!r}")
        kernel, stride, dilation = _pair(kernel), _pair(stride), _pair(dilation)
        for axis in (0, 1):
            size[axis] += (kernel[axis] - 1) * dilation[axis] * jump[axis]
            jump[axis] *= stride[axis]
    return size[0], size[1]
