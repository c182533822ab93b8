"""musicnn's published taggers as streamtag model files, converted from its checkpoints.

The ``musicnn`` package (Pons & Serra 2019, ISC licence) ships four trained TensorFlow 1
checkpoints. ``convert`` reads one with ``streamtag.catalog.tfcheckpoint`` (no TensorFlow), loads
the weights into ``streamtag.nets``' ``musicnn`` or ``musicnn_vgg`` and writes a model file whose
manifest says where it came from. The package's weights and tag lists are read on the user's
machine; nothing of them is part of streamtag.

    >>> from streamtag import musicnn_models
    >>> package = musicnn_models.find_installed_package()           # doctest: +SKIP
    >>> musicnn_models.convert(package, "musicnn-msd", Path("musicnn-msd.pt"))  # doctest: +SKIP
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamtag import nets
from streamtag.catalog import tfcheckpoint
from streamtag.errors import ModelError
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.manifest import Manifest

__all__ = ["HOP_FRAMES", "NAMES", "WINDOW_FRAMES", "build", "checkpoint_files", "convert",
           "find_installed_package", "read_labels", "recipe"]

NAMES: tuple[str, ...] = ("musicnn-mtt", "musicnn-msd", "vgg-mtt", "vgg-msd")

WINDOW_FRAMES = 187  # 3 s at 16 kHz with a 256-sample hop, the input musicnn was trained on
# The default step between windows: 62 frames (~1 s), so tags update every second and each
# moment of audio is seen in three windows. musicnn's own tool steps a whole window (187).
HOP_FRAMES = 62

SOURCE = "musicnn 0.1.0"
LICENCE = "ISC"
CITATION = ("Jordi Pons and Xavier Serra. musicnn: pre-trained convolutional neural networks "
            "for music audio tagging. ISMIR 2019 late-breaking/demo session.")
URL = "https://github.com/jordipons/musicnn"


@dataclasses.dataclass(frozen=True)
class _Model:
    folder: str  # the checkpoint folder in the package
    labels: str  # the label list's name in configuration.py
    architecture: str  # a streamtag.nets name
    tag_source: str


_MODELS: dict[str, _Model] = {
    "musicnn-mtt": _Model("MTT_musicnn", "MTT_LABELS", "musicnn",
                          "MagnaTagATune, the 50 most frequent tags"),
    "musicnn-msd": _Model("MSD_musicnn", "MSD_LABELS", "musicnn",
                          "Million Song Dataset, the 50 most frequent last.fm tags"),
    "vgg-mtt": _Model("MTT_vgg", "MTT_LABELS", "musicnn_vgg",
                      "MagnaTagATune, the 50 most frequent tags"),
    "vgg-msd": _Model("MSD_vgg", "MSD_LABELS", "musicnn_vgg",
                      "Million Song Dataset, the 50 most frequent last.fm tags"),
}


def _model(name: str) -> _Model:
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(f"unknown musicnn model {name!r}; the names are "
                         f"{', '.join(NAMES)}") from None


def find_installed_package() -> Path | None:
    """The folder of the installed ``musicnn`` package, or None. Found without importing it
    (its import loads TensorFlow)."""
    try:
        spec = importlib.util.find_spec("musicnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location)
        if (folder / "configuration.py").is_file():
            return folder
    return None


def _prefix(package_dir: Path, name: str) -> str:
    # musicnn saved its checkpoints with an empty file name: MSD_musicnn/.index and so on.
    return os.path.join(package_dir, _model(name).folder, "")


def checkpoint_files(package_dir: Path, name: str) -> list[Path]:
    """The checkpoint's ``.index`` and ``.data-*`` files that ``convert`` reads."""
    return tfcheckpoint.checkpoint_files(_prefix(Path(package_dir), name))


def read_labels(package_dir: Path, name: str) -> tuple[str, ...]:
    """The tags of model ``name``, in output order, from the package's ``configuration.py``
    (parsed, not imported)."""
    path = Path(package_dir) / "configuration.py"
    wanted = _model(name).labels
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise ModelError(f"{path} does not exist: {package_dir} is not a musicnn package "
                         "folder (it holds configuration.py and the MTT_*/MSD_* checkpoint "
                         "folders)") from None
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as error:
        raise ModelError(f"cannot read musicnn's tag lists from {path}: {error}") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == wanted for t in node.targets):
            try:
                labels = ast.literal_eval(node.value)
            except ValueError:
                break
            if isinstance(labels, list) and labels and all(
                    isinstance(label, str) and label for label in labels):
                return tuple(labels)
            break
    raise ModelError(f"{path} has no list of tag names {wanted}; is it musicnn's "
                     "configuration.py?")


# How a TensorFlow variable becomes a PyTorch tensor.
def _conv2d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)  # (h, w, in, out) -> (out, in, h, w)


def _conv1d(kernel: np.ndarray) -> np.ndarray:
    # musicnn's mid-end conv is 2-D over (frames, channels) with one input "channel":
    # (7, channels, 1, out) -> (out, channels, 7)
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        return kernel  # left wrong-shaped, so that the shape check names it
    return kernel[:, :, 0, :].transpose(2, 1, 0)


def _dense(kernel: np.ndarray) -> np.ndarray:
    return kernel.T  # (in, out) -> (out, in)


def _same(value: np.ndarray) -> np.ndarray:
    return value


_Mapping = list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]


def _batch_norm(ours: str, theirs: str) -> _Mapping:
    return [(f"{ours}.weight", f"{theirs}/gamma", _same),
            (f"{ours}.bias", f"{theirs}/beta", _same),
            (f"{ours}.running_mean", f"{theirs}/moving_mean", _same),
            (f"{ours}.running_var", f"{theirs}/moving_variance", _same)]


def _conv(ours: str, theirs: str, transform: Callable[[np.ndarray], np.ndarray]) -> _Mapping:
    return [(f"{ours}.weight", f"{theirs}/kernel", transform),
            (f"{ours}.bias", f"{theirs}/bias", _same)]


def _bn_name(index: int) -> str:
    # tf.layers names its unnamed layers in creation order: batch_normalization,
    # batch_normalization_1, ...
    return "batch_normalization" if index == 0 else f"batch_normalization_{index}"


def _conv_name(index: int) -> str:
    return "conv2d" if index == 0 else f"conv2d_{index}"


def _musicnn_mapping(model: nn.Module) -> _Mapping:
    """Our ``MusiCNN`` state-dict names against the checkpoint's, in musicnn's layer order."""
    mapping = _batch_norm("input_bn", _bn_name(0))
    blocks = ["timbral.0", "timbral.1", "temporal.0", "temporal.1", "temporal.2"]
    for i, block in enumerate(blocks):
        mapping += _conv(f"{block}.conv", _conv_name(i), _conv2d)
        mapping += _batch_norm(f"{block}.bn", _bn_name(i + 1))
    for i in range(3):
        mapping += _conv(f"midend.{i}.conv", _conv_name(len(blocks) + i), _conv1d)
        mapping += _batch_norm(f"midend.{i}.bn", _bn_name(len(blocks) + 1 + i))
    mapping += _batch_norm("pool_bn", _bn_name(9))
    mapping += _conv("dense", "dense", _dense)
    mapping += _batch_norm("dense_bn", _bn_name(10))
    mapping += _conv("output", "dense_1", _dense)
    return mapping


def _vgg_mapping(model: nn.Module) -> _Mapping:
    mapping = _batch_norm("input_bn", _bn_name(0))
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    norms = [i for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d)]
    for n, (conv, norm) in enumerate(zip(convs, norms, strict=True), start=1):
        mapping += _conv(f"features.{conv}", f"{n}CNN", _conv2d)
        mapping += _batch_norm(f"features.{norm}", _bn_name(n))
    mapping += _conv("dense", "dense", _dense)
    return mapping


# Each architecture the importer fills: how our state-dict names meet the checkpoint's.
_MAPPINGS: dict[str, Callable[[nn.Module], _Mapping]] = {
    "musicnn": _musicnn_mapping, "musicnn_vgg": _vgg_mapping}


def _is_model_variable(name: str) -> bool:
    # The checkpoints also hold Adam's slots and its beta powers: training state, not weights.
    return not (name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power"))


def _load_weights(model: nn.Module, mapping: _Mapping, prefix: str) -> None:
    index = tfcheckpoint.index_file(prefix)
    state = model.state_dict()
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    mapped = {ours for ours, _, _ in mapping}
    if mapped != expected:  # a programming error, not a user's
        raise AssertionError(f"mapping and model disagree: {sorted(mapped ^ expected)}")
    available = tfcheckpoint.list_tensors(prefix)
    theirs = [name for _, name, _ in mapping]
    missing = [name for name in theirs if name not in available]
    if missing:
        raise ModelError(f"TensorFlow checkpoint {index} lacks tensor {missing[0]!r}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: it "
                         "is not the musicnn checkpoint this model needs")
    unused = sorted(n for n in available if _is_model_variable(n) and n not in theirs)
    if unused:
        raise ModelError(f"TensorFlow checkpoint {index} holds tensor {unused[0]!r} that this "
                         "model has no place for: it is not the musicnn checkpoint this model "
                         "needs")
    weights = tfcheckpoint.read_checkpoint(prefix, theirs)
    loaded: dict[str, torch.Tensor] = {}
    for ours, name, transform in mapping:
        value = np.ascontiguousarray(transform(weights[name]))
        target = state[ours]
        if tuple(value.shape) != tuple(target.shape):
            raise ModelError(f"TensorFlow checkpoint {index}: tensor {name!r} has shape "
                             f"{tuple(weights[name].shape)}, which does not fit {ours} of shape "
                             f"{tuple(target.shape)}: it is not the musicnn checkpoint this "
                             "model needs")
        if value.dtype != np.float32:
            raise ModelError(f"TensorFlow checkpoint {index}: tensor {name!r} is {value.dtype}, "
                             "expected float32")
        loaded[ours] = torch.from_numpy(value)
    model.load_state_dict(loaded, strict=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(package_dir: Path, name: str) -> tuple[nn.Module, tuple[str, ...]]:
    """Model ``name``'s network with its weights loaded (eval mode), and its tags."""
    package_dir = Path(package_dir)
    spec = _model(name)
    tags = read_labels(package_dir, name)
    prefix = _prefix(package_dir, name)
    model = nets.build(spec.architecture, len(tags))
    mapping = _MAPPINGS[spec.architecture](model)
    _load_weights(model, mapping, prefix)
    return model.eval(), tags


def recipe(package_dir: Path, name: str) -> dict[str, object]:
    """What a converted model's manifest records of where it came from: the source, licence,
    citation, tag source and the SHA-256 of each checkpoint file."""
    spec = _model(name)
    files = checkpoint_files(Path(package_dir), name)
    return {
        "converted_from": SOURCE,
        "source": SOURCE,
        "url": URL,
        "licence": LICENCE,
        "citation": CITATION,
        "tag_source": spec.tag_source,
        "checkpoint": spec.folder,
        "checkpoint_sha256": {f"{spec.folder}/{p.name}": _sha256(p) for p in files},
    }


def convert(package_dir: Path, name: str, out: Path) -> Manifest:
    """Writes musicnn model ``name`` from the musicnn package folder ``package_dir`` as the
    model file ``out`` (atomically: on an error nothing is written at ``out``).

    The manifest: frontend the ``musicnn`` preset, window 187 frames, hop ``HOP_FRAMES``,
    thresholds the default; ``recipe`` records the source, licence, citation, tag source and
    the SHA-256 of each checkpoint file. Raises ``ModelError`` naming the file and tensor for a
    missing, truncated or corrupt checkpoint, a missing tensor or a shape mismatch.
    """
    package_dir, out = Path(package_dir), Path(out)
    spec = _model(name)
    model, tags = build(package_dir, name)
    manifest = Manifest(
        name=name,
        tags=tags,
        input_kind="logmel",
        frontend=LogMelOptions.preset("musicnn"),
        window=WINDOW_FRAMES,
        hop=HOP_FRAMES,
        architecture={"name": spec.architecture, **nets.spec(spec.architecture)["options"]},
        options={"window_seconds": WINDOW_FRAMES * 256 / 16000},
        recipe=recipe(package_dir, name),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return modelfile.save(model, out, manifest)  # atomic: a temporary file, then a rename
