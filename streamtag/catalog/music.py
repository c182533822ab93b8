"""``music``: the recommended real-music tagger, under a name that outlives what it is made of.

Today it is musicnn's Million Song Dataset and MagnaTagATune taggers (``streamtag.catalog.
musicnn``) on one shared input: the daemon frames each window once, both networks score it,
and their tag lists are one list, a tag both name (rock, pop, electronic, ...) scoring the mean
of their probabilities. MSD brings the genres and moods (Mellow, chill, happy, sad, party);
MTT the instruments and what a genre list lacks (classical, piano, strings, violin, choir,
harpsichord, vocals, no vocals, fast, slow, loud, quiet). The file's architecture is the zoo's
``musicnn_pair``, so overlapping windows share work in both networks as in one.

    >>> from streamtag.catalog import music
    >>> music.convert(package, Path("music.pt"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch

from streamtag import nets
from streamtag.catalog import musicnn
from streamtag.frontend import LogMelOptions
from streamtag.model import modelfile
from streamtag.model.manifest import Manifest

__all__ = ["MEMBERS", "NAME", "checkpoint_files", "convert", "merged_tags"]

NAME = "music"
MEMBERS = ("musicnn-msd", "musicnn-mtt")  # the first's spelling wins for a tag both name
ARCHITECTURE = "musicnn_pair"
DESCRIPTION = ("musicnn's MSD and MTT taggers on one input: genres, moods, instruments and "
               "voices in one tag list")


def merged_tags(first: tuple[str, ...], second: tuple[str, ...]
                ) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    """The merged tag list (``first``'s tags, then ``second``'s that ``first`` does not name,
    compared without case) and the two mixing matrices of ``nets.MusicnnPair``."""
    index = {tag.lower(): i for i, tag in enumerate(first)}
    tags = list(first)
    for tag in second:
        if tag.lower() not in index:
            index[tag.lower()] = len(tags)
            tags.append(tag)
    first_mix = torch.zeros(len(first), len(tags))
    second_mix = torch.zeros(len(second), len(tags))
    shared = {tag.lower() for tag in first} & {tag.lower() for tag in second}
    for i, tag in enumerate(first):
        first_mix[i, i] = 0.5 if tag.lower() in shared else 1.0
    for i, tag in enumerate(second):
        second_mix[i, index[tag.lower()]] = 0.5 if tag.lower() in shared else 1.0
    return tuple(tags), first_mix, second_mix


def checkpoint_files(package_dir: Path) -> list[Path]:
    """Every checkpoint file that ``convert`` reads."""
    return [path for member in MEMBERS for path in musicnn.checkpoint_files(package_dir, member)]


def convert(package_dir: Path, out: Path) -> Manifest:
    """Writes ``music`` from the musicnn package folder ``package_dir`` as the model file
    ``out`` (atomically). Its manifest's recipe says what it is made of (``made_of``), with
    each member's source, licence, citation and checkpoint hashes; errors as
    ``musicnn.convert``'s."""
    package_dir, out = Path(package_dir), Path(out)
    (first, first_tags), (second, second_tags) = (musicnn.build(package_dir, m) for m in MEMBERS)
    tags, first_mix, second_mix = merged_tags(first_tags, second_tags)
    options = {key: value for key, value in nets.spec(ARCHITECTURE)["options"].items()
               if key not in ("first_tags", "second_tags")}
    pair = nets.build(ARCHITECTURE, len(tags), first_tags=len(first_tags),
                      second_tags=len(second_tags), **options)
    pair.first.load_state_dict(first.state_dict())
    pair.second.load_state_dict(second.state_dict())
    pair.first_mix.copy_(first_mix)
    pair.second_mix.copy_(second_mix)
    members = [musicnn.recipe(package_dir, m) for m in MEMBERS]
    manifest = Manifest(
        name=NAME,
        tags=tags,
        input_kind="logmel",
        frontend=LogMelOptions.preset("musicnn"),
        window=musicnn.WINDOW_FRAMES,
        hop=musicnn.HOP_FRAMES,
        architecture={"name": ARCHITECTURE, **options, "first_tags": len(first_tags),
                      "second_tags": len(second_tags)},
        options={"window_seconds": musicnn.WINDOW_FRAMES * 256 / 16000},
        recipe={
            "description": DESCRIPTION,
            "made_of": list(MEMBERS),
            "converted_from": musicnn.SOURCE,
            "source": musicnn.SOURCE,
            "url": musicnn.URL,
            "licence": musicnn.LICENCE,
            "citation": musicnn.CITATION,
            "tag_source": " and ".join(m["tag_source"] for m in members)
                          + "; a tag both name is the mean of their probabilities",
            "checkpoint": [m["checkpoint"] for m in members],
            "checkpoint_sha256": {k: v for m in members
                                  for k, v in m["checkpoint_sha256"].items()},
        },
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return modelfile.save(pair.eval(), out, manifest)  # atomic: a temporary file, then a rename
