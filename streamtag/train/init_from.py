"""Fine-tuning: a recipe's model starts from the body of a trained model file.

``[model] init = "musicnn-msd"`` (an installed model's name) or a model file's path: the file's
architecture must be the recipe's, with the same options and frontend; every weight and
batch-norm statistic of the body (all but the head) is copied bit for bit, and the head, the
layers whose shapes depend on the number of tags, keeps its fresh initialisation for the
recipe's own tags. ``[model] freeze_body_epochs = N`` trains only the head for the first N
epochs: the body's parameters take no gradient and its batch-norm layers keep their statistics.

The head is found without knowing the architecture: the architecture is built for two numbers
of tags, and the entries whose shapes differ are the head.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from streamtag.errors import ConfigError, ModelError

__all__ = ["freeze_for_epoch", "head_names", "load_body", "set_body_frozen", "start"]


def head_names(architecture: str, options: Mapping[str, Any], n_tags: int) -> frozenset[str]:
    """Names of the state-dict entries whose shapes depend on the number of tags."""
    from streamtag import nets

    one = nets.build(architecture, n_tags, **options).state_dict()
    other = nets.build(architecture, n_tags + 1, **options).state_dict()
    return frozenset(k for k in one if one[k].shape != other[k].shape)


def _module_prefixes(names: frozenset[str]) -> frozenset[str]:
    return frozenset(name.rpartition(".")[0] for name in names)


def load_body(model: nn.Module, init: str | os.PathLike, architecture: str,
              options: Mapping[str, Any], frontend: Any, n_tags: int,
              log: Callable[[str], None] | None = None) -> frozenset[str]:
    """Copies the body of model file ``init`` (a path or an installed name) into ``model`` (the
    recipe's, built with ``architecture`` and ``options`` for ``n_tags`` tags); returns the head's
    entry names. ConfigError naming the file and what differs when the body does not fit."""
    from streamtag.catalog.installed import resolve_model
    from streamtag.model import modelfile

    try:
        path = resolve_model(init)
        loaded = modelfile.load(path, device="cpu")
    except ModelError as error:
        raise ConfigError(f"model.init: {error}") from None
    theirs = loaded.manifest.architecture.get("name")
    if theirs == "ensemble":
        raise ConfigError(f"model.init {path}: it is an ensemble of {len(loaded.manifest.members)}"
                          " models, which has no one body to fine-tune; start from one of its "
                          "members' model files")
    if theirs != architecture:
        raise ConfigError(f"model.init {path}: it is a {theirs!r} model but the recipe builds "
                          f"{architecture!r}; fine-tuning needs the same architecture (set "
                          f"model.architecture = \"{theirs}\" and its options)")
    if loaded.frontend_options != frontend:
        ours, file_options = frontend.to_dict(), loaded.frontend_options.to_dict()
        key = next(k for k in ours if ours[k] != file_options[k])
        raise ConfigError(f"model.init {path}: its frontend option {key} is "
                          f"{file_options[key]!r}, the recipe's is {ours[key]!r}; its body "
                          "learned on other features (use the file's [frontend] in the recipe)")
    head = head_names(architecture, options, n_tags)
    state = loaded.module.model.state_dict()
    target = model.state_dict()
    body = {}
    for name, tensor in target.items():
        if name in head:
            continue
        source = state.get(name)
        if source is None:
            raise ConfigError(f"model.init {path}: it has no weight {name!r} that the recipe's "
                              f"{architecture} {dict(options)} has; are its model.options the "
                              "file's?")
        if source.shape != tensor.shape:
            raise ConfigError(f"model.init {path}: weight {name!r} is {tuple(source.shape)} in "
                              f"the file but {tuple(tensor.shape)} in the recipe's "
                              f"{architecture} {dict(options)}; set model.options as the "
                              f"file's ({loaded.manifest.options or 'its defaults'})")
        body[name] = source.to(tensor.dtype)
    extra = sorted(set(state) - set(target))
    if extra:
        raise ConfigError(f"model.init {path}: its weight {extra[0]!r} has no place in the "
                          f"recipe's {architecture} {dict(options)}; set model.options as the "
                          "file's")
    model.load_state_dict(body, strict=False)  # every entry but the head's, checked above
    if log is not None:
        log(f"init: body of {path} ({loaded.name}; {len(body)} entries), new head "
            f"{sorted(_module_prefixes(head))} for {n_tags} tags")
    return head


_FROZEN_HERE = "_streamtag_body_frozen"  # marks the parameters set_body_frozen froze


def set_body_frozen(model: nn.Module, head: frozenset[str], frozen: bool) -> None:
    """Freezes the trainable parameters not in ``head``, or frees the ones it froze (a part the
    model freezes itself, such as a frozen VQ-VAE encoder, stays frozen); frozen batch-norm
    layers of the body are put in eval mode so their statistics stay. Call after
    ``model.train()``."""
    head_modules = _module_prefixes(head)
    for name, parameter in model.named_parameters():
        if name in head:
            continue
        if frozen and parameter.requires_grad:
            parameter.requires_grad_(False)
            setattr(parameter, _FROZEN_HERE, True)
        elif not frozen and getattr(parameter, _FROZEN_HERE, False):
            parameter.requires_grad_(True)
            delattr(parameter, _FROZEN_HERE)
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and name not in head_modules:
                module.eval()



def start(model: nn.Module, config: Any, frontend: Any, n_tags: int, *, resume: bool = False,
          log: Callable[[str], None] | None = None) -> frozenset[str]:
    """The trainer's one call where it builds the model: loads the body of ``config.init`` (a
    recipe's ``[model]``) unless the run resumes (its checkpoint holds the weights); returns the
    head's entry names, empty without ``init``."""
    if not config.init:
        return frozenset()
    if resume:
        return head_names(config.architecture, config.options, n_tags)
    return load_body(model, config.init, config.architecture, config.options, frontend, n_tags,
                     log=log)


def freeze_for_epoch(model: nn.Module, head: frozenset[str], config: Any, epoch: int) -> None:
    """Before epoch ``epoch`` (0-based) of a run started with ``init``: the body frozen for the
    first ``config.freeze_body_epochs`` epochs, trained after. Nothing without ``init`` (a
    model's own frozen parts, such as a frozen VQ-VAE encoder, stay as they are)."""
    if config.init:
        set_body_frozen(model, head, frozen=epoch < config.freeze_body_epochs)
