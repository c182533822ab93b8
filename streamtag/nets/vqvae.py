"""VQ-VAE features and the GRU / CNN taggers on its codes (team TaiInn, MediaEval 2019)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VQVAE", "VQVAEGRU", "VQVAECNN"]

DILATIONS = (2, 4, 8, 16)
# vq_type → frequency kernel of the fifth encoder conv: 128 mels → 4 (type 1) or 1 (type 2) rows.
FIFTH_KERNEL_FREQ = {1: 5, 2: 8}


def _code_rows(n_mels: int, vq_type: int) -> int:
    if vq_type not in FIFTH_KERNEL_FREQ:
        raise ValueError(f"vq_type must be 1 or 2, got {vq_type}")
    rows = n_mels
    for _ in DILATIONS:
        rows //= 2
    rows -= FIFTH_KERNEL_FREQ[vq_type] - 1
    if rows < 1:
        raise ValueError(f"n_mels={n_mels} is too few for vq_type={vq_type}")
    return rows


def _init_conv(module: nn.Module) -> None:
    # Xavier-uniform weights and zero biases, as in the authors' VQ-VAE.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResBlock(nn.Module):
    """x + BN(conv1×1(ReLU(BN(conv3×3(ReLU(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """Four convs with kernel (4,3), stride (2,1) and padding = dilation = (1,d), d = 2, 4, 8, 16
    (each halves the mels and keeps the frames, with batch norm and ReLU); a fifth conv with
    kernel (5,4) (type 1) or (8,4) (type 2), stride (1,2), padding (0,1); two residual blocks.
    128 × T log-mel → ``channels`` × 4 × T/2 (type 1) or ``channels`` × 1 × T/2 (type 2)."""

    def __init__(self, channels: int, vq_type: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for d in DILATIONS:
            layers += [
                nn.Conv2d(in_channels, channels, (4, 3), (2, 1), (1, d), dilation=(1, d)),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            ]
            in_channels = channels
        kernel = (FIFTH_KERNEL_FREQ[vq_type], 4)
        layers += [
            nn.Conv2d(channels, channels, kernel, (1, 2), (0, 1)),
            ResBlock(channels),
            ResBlock(channels),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.unsqueeze(1))


class Decoder(nn.Module):
    """Mirror of the encoder: two residual blocks, then five transposed convs (the fifth
    encoder conv's, then the dilated ones with d = 16, 8, 4, 2), ending in tanh."""

    def __init__(self, channels: int, vq_type: int) -> None:
        super().__init__()
        kernel = (FIFTH_KERNEL_FREQ[vq_type], 4)
        layers: list[nn.Module] = [
            ResBlock(channels),
            ResBlock(channels),
            nn.ReLU(),
            nn.ConvTranspose2d(channels, channels, kernel, (1, 2), (0, 1)),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
        for d in reversed(DILATIONS):
            last = d == DILATIONS[0]
            out_channels = 1 if last else channels
            layers.append(
                nn.ConvTranspose2d(channels, out_channels, (4, 3), (2, 1), (1, d), dilation=(1, d))
            )
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(channels), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).squeeze(1)


class Codebook(nn.Module):
    """``n_codes`` code vectors; each encoder output vector is replaced by its nearest code."""

    def __init__(self, n_codes: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_codes, 1.0 / n_codes)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, dim, rows, frames)`` → nearest codes (same shape) and their indices."""
        batch, dim, rows, frames = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, dim)
        codes = self.embedding.weight
        distance = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * torch.matmul(flat, codes.t())
            + codes.pow(2).sum(1).unsqueeze(0)
        )
        indices = distance.argmin(dim=1)
        z_q = codes.index_select(0, indices).view(batch, rows, frames, dim).permute(0, 3, 1, 2)
        return z_q, indices.view(batch, rows, frames)


def _straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    # The value of z_q with the gradient of z_e (van den Oord et al. 2017).
    return z_e + (z_q - z_e).detach()


def _scaling_buffers(module: nn.Module, input_offset: float, input_scale: float) -> None:
    # Buffers, not constants: state_dict and TorchScript carry the scaling with the weights.
    if not input_scale > 0:
        raise ValueError(f"input_scale must be > 0, got {input_scale}")
    module.register_buffer("input_offset", torch.tensor(float(input_offset)))
    module.register_buffer("input_scale", torch.tensor(float(input_scale)))


class VQVAE(nn.Module):
    """VQ-VAE (van den Oord et al. 2017) on log-mel spectrograms, team TaiInn, MediaEval 2019.

    The feature extractor of Hung et al.'s runs: ``Encoder`` (256 maps), a ``Codebook`` of 1024
    codes of dimension 256 with the straight-through estimator, and a ``Decoder`` that mirrors
    the encoder. Pre-train it on unlabeled audio with ``pretrain_loss`` (reconstruction MSE +
    codebook loss + beta × commitment loss), then load its encoder and codebook into
    ``vqvae_gru`` or ``vqvae_cnn`` with ``load_encoder_state_dict``.

    ``forward(x)`` returns the reconstruction ``(batch, n_mels, frames)``; ``forward_vq(x)``
    returns (reconstruction, codebook loss, commitment loss, code indices); ``encode(x)`` the
    quantized code map and the indices. ``n_tags`` is accepted for the registry and unused.

    Input: ``(batch, 128, frames)`` log-mel; the model first computes ``(x - input_offset) ×
    input_scale``, which should lie in [-1, 1] (the decoder ends in tanh), and reconstructs that
    scaled input: ``forward``, ``forward_vq`` and ``pretrain_loss`` work in the scaled units
    (``scale_input(x)`` gives them). Default 128 × 1024, giving a 256 × 4 × 512 code map (type 1)
    or 256 × 1 × 512 (type 2). Any even number of frames >= 2 reconstructs to the input's shape.

    Options: ``vq_type`` (1), ``channels`` (256), ``n_codes`` (1024), ``beta`` (0.25),
    ``n_mels`` (128), ``input_offset`` (0.0), ``input_scale`` (1.0; ``streamtag pretrain`` sets
    both from the training features).
    """

    input_kind = "logmel"
    default_input = (128, 1024)
    min_input = (128, 2)

    def __init__(
        self,
        n_tags: int = 0,
        vq_type: int = 1,
        channels: int = 256,
        n_codes: int = 1024,
        beta: float = 0.25,
        n_mels: int = 128,
        input_offset: float = 0.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _code_rows(n_mels, vq_type)
        self.beta = beta
        _scaling_buffers(self, input_offset, input_scale)
        self.encoder = Encoder(channels, vq_type)
        self.codebook = Codebook(n_codes, channels)
        self.decoder = Decoder(channels, vq_type)
        self.apply(_init_conv)

    @torch.jit.export
    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel in the units the autoencoder works in (about [-1, 1])."""
        return (x - self.input_offset) * self.input_scale

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized code map (straight-through) and code indices."""
        z_e = self.encoder(self.scale_input(x))
        z_q, indices = self.codebook(z_e)
        return _straight_through(z_e, z_q), indices

    @torch.jit.export
    def forward_vq(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction (of ``scale_input(x)``), codebook loss |sg[z_e] - e|², commitment loss
        |z_e - sg[e]|², indices."""
        z_e = self.encoder(self.scale_input(x))
        z_q, indices = self.codebook(z_e)
        vq_loss = F.mse_loss(z_q, z_e.detach())
        commitment_loss = F.mse_loss(z_e, z_q.detach())
        reconstruction = self.decoder(_straight_through(z_e, z_q))
        return reconstruction, vq_loss, commitment_loss, indices

    @torch.jit.export
    def pretrain_loss(self, x: torch.Tensor) -> torch.Tensor:
        reconstruction, vq_loss, commitment_loss, _ = self.forward_vq(x)
        return (F.mse_loss(reconstruction, self.scale_input(x)) + vq_loss
                + self.beta * commitment_loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_vq(x)[0]


class _CodeTagger(nn.Module):
    """Encoder and codebook of a VQ-VAE, optionally frozen, feeding a tagging head."""

    input_kind = "logmel"
    default_input = (128, 1024)
    min_input = (128, 2)

    def __init__(
        self,
        vq_type: int,
        channels: int,
        n_codes: int,
        n_mels: int,
        freeze_encoder: bool,
        input_offset: float,
        input_scale: float,
    ) -> None:
        super().__init__()
        self.code_rows = _code_rows(n_mels, vq_type)
        self.freeze_encoder = freeze_encoder
        _scaling_buffers(self, input_offset, input_scale)
        self.encoder = Encoder(channels, vq_type)
        self.codebook = Codebook(n_codes, channels)
        self.encoder.apply(_init_conv)
        if freeze_encoder:
            for p in [*self.encoder.parameters(), *self.codebook.parameters()]:
                p.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> _CodeTagger:
        # A frozen encoder stays in eval mode, so its batch-norm statistics stay as pre-trained.
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
            self.codebook.eval()
        return self

    def load_encoder_state_dict(
        self, state_dict: Mapping[str, torch.Tensor] | nn.Module, strict: bool = True
    ) -> None:
        """Load the encoder, codebook and input scaling of a pre-trained ``VQVAE`` (its state
        dict or itself); a state dict without the scaling leaves this model's."""
        if isinstance(state_dict, nn.Module):
            state_dict = state_dict.state_dict()
        for name, module in (("encoder", self.encoder), ("codebook", self.codebook)):
            prefix = name + "."
            part = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            module.load_state_dict(part, strict=strict)
        with torch.no_grad():
            for name in ("input_offset", "input_scale"):
                if name in state_dict:
                    getattr(self, name).copy_(state_dict[name])

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        z_e = self.encoder((x - self.input_offset) * self.input_scale)
        z_q, _ = self.codebook(z_e)
        return _straight_through(z_e, z_q)


class VQVAEGRU(_CodeTagger):
    """Bidirectional-GRU tagger on VQ-VAE codes, team TaiInn, MediaEval 2019.

    Log-mel → VQ-VAE encoder and codebook → the code map read as a sequence over time (channels ×
    rows features per step) → bidirectional GRU → layer norm → bidirectional GRU → both
    directions' final states → dense layer to the tags (logits). With ``freeze_encoder=True``
    (the best runs, 2 and 4) the encoder and codebook are not trained and stay in eval mode.
    Load pre-trained ones with ``load_encoder_state_dict``.

    Input: ``(batch, 128, frames)``, default 128 × 1024; at least 2 frames. Scaled first as
    ``vqvae`` scales it (``input_offset``, ``input_scale``, taken from the pre-trained file).

    Options: ``vq_type`` (1), ``channels`` (256), ``n_codes`` (1024), ``n_mels`` (128),
    ``freeze_encoder`` (False), ``gru_units`` (256), ``input_offset`` (0.0), ``input_scale``
    (1.0).
    """

    def __init__(
        self,
        n_tags: int,
        vq_type: int = 1,
        channels: int = 256,
        n_codes: int = 1024,
        n_mels: int = 128,
        freeze_encoder: bool = False,
        gru_units: int = 256,
        input_offset: float = 0.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(
            vq_type, channels, n_codes, n_mels, freeze_encoder, input_offset, input_scale
        )
        self.gru1 = nn.GRU(
            channels * self.code_rows, gru_units, batch_first=True, bidirectional=True
        )
        self.norm = nn.LayerNorm(2 * gru_units)
        self.gru2 = nn.GRU(2 * gru_units, gru_units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * gru_units, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.codes(x)
        batch, channels, rows, frames = z.shape
        seq = z.permute(0, 3, 1, 2).reshape(batch, frames, channels * rows)
        seq, _ = self.gru1(seq)
        _, last = self.gru2(self.norm(seq))
        return self.dense(last.transpose(0, 1).reshape(batch, -1))


class VQVAECNN(_CodeTagger):
    """Small CNN tagger on VQ-VAE codes, team TaiInn, MediaEval 2019.

    Log-mel → VQ-VAE encoder and codebook → two 3×3 convs (128 channels, batch norm, ReLU) →
    global max pooling → dropout → dense layer to the tags (logits). ``freeze_encoder`` and
    ``load_encoder_state_dict`` as for ``vqvae_gru``.

    Input: ``(batch, 128, frames)``, default 128 × 1024; at least 2 frames; scaled as for
    ``vqvae_gru``.

    Options: ``vq_type`` (1), ``channels`` (256), ``n_codes`` (1024), ``n_mels`` (128),
    ``freeze_encoder`` (False), ``conv_channels`` (128), ``dropout`` (0.5), ``input_offset``
    (0.0), ``input_scale`` (1.0).
    """

    def __init__(
        self,
        n_tags: int,
        vq_type: int = 1,
        channels: int = 256,
        n_codes: int = 1024,
        n_mels: int = 128,
        freeze_encoder: bool = False,
        conv_channels: int = 128,
        dropout: float = 0.5,
        input_offset: float = 0.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(
            vq_type, channels, n_codes, n_mels, freeze_encoder, input_offset, input_scale
        )
        self.conv = nn.Sequential(
            nn.Conv2d(channels, conv_channels, 3, padding=1),
            nn.BatchNorm2d(conv_channels),
            nn.ReLU(),
            nn.Conv2d(conv_channels, conv_channels, 3, padding=1),
            nn.BatchNorm2d(conv_channels),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(conv_channels, n_tags)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.codes(x)).amax(dim=(2, 3))
        return self.dense(self.dropout(h))
