"""music-small against its teacher: agreement on held-out sources, and streams per core.

    python benchmarks/music_small.py RUN_DIR [--recipe models/music-small.toml]
        [--thresholds METHOD] [--csv NAME ...] [--split SPLIT] [--tracks] [--speed]

Agreement, on the corpus's test split (packages never seen in training, ``benchmarks/
corpus.py``), from the run's ``predictions.npz`` (the student's probabilities per clip, its
exported weights) and the teacher's cached scores (``streamtag.train.distill.TeacherScores``).
With ``--csv corpus.csv held-out-2.csv``, on the test split of each CSV named (beside the
corpus's), together: the run's ``model.pt`` scores them as ``streamtag eval`` does, and the
teacher's scores of clips it has not scored yet are computed and cached as training does.
With ``--split train`` (or ``validation``), the same measures on that split of the CSVs (the
recipe's by default), scored by ``model.pt`` likewise: how close the student came to the
teacher on the clips it was fitted to, against the packages it never heard.

- macro ROC-AUC and PR-AUC against the teacher's tags (its probabilities at its thresholds),
  over the tags the teacher turns on at least once and not on every clip; each tag's ROC-AUC,
  and the tags under 0.8 (what the student cannot learn here); a 95 % bootstrap interval of
  the macro ROC-AUC, resampling whole files;
- the mean absolute difference between the student's and the teacher's probabilities;
- each held-out music track's headline tags as ``streamtag tag`` shows them (on in more than
  half of its windows, each model at its own thresholds): the share of tracks whose headline is
  the teacher's, and whose headline shares at least half its tags (of both) with the teacher's;
  and by mean probability, the share whose top tag is the teacher's, and whose top 3 share at
  least 2 with the teacher's; and how many tags each model turns on in a clip. For scale, the
  same two shares for the teacher against itself: its headline of a track's odd clips against
  its headline of the even clips.

``--tracks`` then measures the headline where users read it: each held-out music file whole
(of the CSVs named, or the recipe's), decoded as the corpus decodes it (``benchmarks/corpus.py``:
16 kHz mono, MIDI rendered with FluidR3 GM), is tagged by ``music`` and by the run's
``model.pt`` on the daemon's engine (``streamtag.engine.tagging.tag_files``, what ``streamtag
tag`` runs: a window every second, smoothed, content decided); the two files' headline tags
(``FileTags.tags``, what ``streamtag tag`` prints) are compared as above, and the top tag (the
one on in the most windows). For scale, the teacher's headline of each file's first half
against that of its second half (the teacher's headlines are kept in the cache folder's
``teacher-tracks/``, by its weights' hash, for the next run). Written to ``tracks-<stems>.json``
in the run folder.

The student's thresholds are the run's own (its recipe's ``threshold_method``), or with
``--thresholds METHOD`` chosen by that method on the run's validation predictions, as training
would have chosen them (``streamtag.train.metrics.choose_thresholds``): a run made before its
recipe changed method is measured as the recipe now is, without training it again. Two methods
are the benchmark's own (``headline_thresholds``): ``headline`` and ``headline-f1`` choose each
tag's threshold for the headline's rule on the validation files (a tag in as many of their
headlines as the teacher's, or in those that give the best F1 against the teacher's), to see
whether thresholds fitted to whole files rather than clips bring the headlines closer.

``--speed`` then runs ``benchmarks/streams.py`` once with the shipped model, music-small,
musicnn-msd and music side by side (ONNX Runtime, the daemon's CPU backend; all four must be
installed by name but the shipped one) and prints each one's real-time streams per core and
its ratio to music.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPLITS = ("train", "validation", "test")  # the corpus CSVs' splits


def teacher_scores(recipe, ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The teacher's probabilities of the clips ``ids`` (from the cache training filled), its
    thresholds and its tags."""
    from streamtag.catalog.installed import resolve_model
    from streamtag.model.inference import InferenceModel
    from streamtag.train.cache import FeatureCache
    from streamtag.train.distill import TeacherScores

    root = recipe.train.cache_root()
    teacher = InferenceModel.load(resolve_model(recipe.data.options["teacher"]), device="cpu")
    features = FeatureCache(root / "features", teacher.frontend)
    scores = TeacherScores(root, teacher, features)
    missing = [i for i in ids if not scores.has(i)]
    if missing:
        raise SystemExit(f"{len(missing)} clips have no cached teacher scores (e.g. "
                         f"{missing[0]}); train the recipe first")
    return (np.stack([scores.scores(i) for i in ids]).astype(np.float64),
            np.asarray(teacher.thresholds), list(teacher.tags))


def corpus_root(recipe) -> Path:
    """The corpus's folder, as the trainer finds it: ``data.root``, else the cache folder's
    ``corpus/``."""
    return (Path(recipe.data.root).expanduser() if recipe.data.root
            else recipe.train.cache_root() / "corpus")


def corpus_rows(recipe, names: list[str] | None = None) -> dict[str, dict[str, str]]:
    """The rows of the corpus's CSVs ``names`` (the recipe's own by default), by clip id."""
    root = corpus_root(recipe)
    rows = {}
    for name in names or [recipe.data.options["csv"]]:
        with open(root / name, newline="", encoding="utf-8") as f:
            rows.update({Path(r["path"]).with_suffix("").as_posix(): r
                         for r in csv.DictReader(f)})
    return rows


def student_scores(run_dir: Path, recipe, names: list[str], split: str = "test"
                   ) -> tuple[list[str], np.ndarray]:
    """The run's model file's probabilities of the ``split`` of each CSV ``names``, one after
    the other, scored as ``streamtag eval`` scores them (``streamtag.train.export.
    model_file_predictions``)."""
    import dataclasses

    from streamtag.model import modelfile
    from streamtag.train.export import model_file_predictions

    loaded = modelfile.load(run_dir / "model.pt", device="cpu")
    ids, scores = [], []
    for name in names:
        one = dataclasses.replace(recipe, data=dataclasses.replace(
            recipe.data, options={**recipe.data.options, "csv": name}))
        data, p = model_file_predictions(loaded, one, split,
                                         log=lambda line: print(line, file=sys.stderr))
        ids += [t.id for t in data.tracks[split]]
        scores.append(p)
    return ids, np.concatenate(scores).astype(np.float64)


def file_of(clip: str) -> str:
    """The file a clip was cut from: its id without the clip's index."""
    return clip.rsplit("-", 1)[0]


def clips_by_file(files: list[str]) -> list[list[int]]:
    """The indices of each file's clips, given each clip's file, in the order files first
    appear."""
    groups: dict[str, list[int]] = defaultdict(list)
    for k, name in enumerate(files):
        groups[name].append(k)
    return list(groups.values())


def macro_roc_auc_interval(on: np.ndarray, student: np.ndarray, files: list[str],
                           resamples: int = 500, seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the macro ROC-AUC, resampling whole files (a file's clips
    are alike, so resampling clips would claim more certainty than 892 clips of a few dozen
    files hold); each resample averages the tags with both classes in it (a resample with none
    is drawn for nothing; NaN where every one is)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    members = clips_by_file(files)
    macros = []
    for _ in range(resamples):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(members),
                                                                 len(members))])
        positives = on[rows].sum(axis=0)
        both = (positives > 0) & (positives < len(rows))
        if not both.any():  # a resample of a few files may hold no tag's both classes
            continue
        macros.append(float(roc_auc_score(on[rows][:, both], student[rows][:, both],
                                          average="macro")))
    if not macros:
        return float("nan"), float("nan")
    low, high = np.percentile(macros, [2.5, 97.5])
    return float(low), float(high)


def headline(on: np.ndarray) -> frozenset[int]:
    """``streamtag tag``'s headline of a track whose windows' decisions are ``on``: the tags on
    in more than half of them."""
    return frozenset(np.flatnonzero(on.mean(axis=0) > 0.5).tolist())


def headlines_agree(a: frozenset[int], b: frozenset[int]) -> tuple[bool, bool]:
    """Whether two headlines are the same, and whether they share at least half of the tags
    either has (two empty ones do)."""
    union = a | b
    return a == b, not union or len(a & b) / len(union) >= 0.5


HEADLINE_METHODS = ("headline", "headline-f1")


def headline_thresholds(ids: list[str], on: np.ndarray, scores: np.ndarray, fallback: np.ndarray,
                        method: str) -> np.ndarray:
    """Thresholds chosen for the headline's rule on the validation files rather than per clip.

    A tag is in a file's headline when it is on in more than half of its clips, that is when the
    threshold is at most the file's ``n // 2``-th highest score counting from 0 (``m``). A tag is
    then put in the headline of as many validation files as the teacher's headline holds it
    (``headline``: the k-th highest ``m``) or of the files that give the highest F1 against the
    teacher's headlines (``headline-f1``); a tag in no teacher headline stays out of every
    file's (just above the highest ``m``, or ``fallback`` where that is higher)."""
    members = clips_by_file([file_of(clip) for clip in ids])
    m = np.stack([np.sort(scores[g], axis=0)[::-1][len(g) // 2] for g in members])
    teacher = np.stack([on[g].mean(axis=0) > 0.5 for g in members])
    thresholds = np.asarray(fallback, dtype=np.float64).copy()
    for j in range(scores.shape[1]):
        k = int(teacher[:, j].sum())
        if k == 0:
            thresholds[j] = max(thresholds[j], float(np.nextafter(m[:, j].max(), np.inf)))
        elif method == "headline":
            thresholds[j] = np.sort(m[:, j])[::-1][k - 1]
        else:
            cuts = np.unique(m[:, j])
            f1 = [2 * (teacher[:, j] & (m[:, j] >= c)).sum() / ((m[:, j] >= c).sum() + k)
                  for c in cuts]
            thresholds[j] = cuts[int(np.argmax(f1))]
    return thresholds


def agreement(run_dir: Path, recipe, method: str | None = None,
              csvs: list[str] | None = None, split: str = "test") -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from streamtag.train.metrics import choose_thresholds

    saved = np.load(run_dir / "predictions.npz")
    if csvs or split != "test":
        csvs = csvs or [recipe.data.options["csv"]]
        ids, student = student_scores(run_dir, recipe, csvs, split)
    else:
        ids = [str(i) for i in saved["test_ids"]]
        student = saved["test_scores"].astype(np.float64)
    teacher, thresholds, tags = teacher_scores(recipe, ids)
    if list(saved["tags"]) != tags:
        raise SystemExit("the run's tags are not the teacher's")
    on = teacher >= thresholds
    per_tag, pr = {}, []
    for j, tag in enumerate(tags):
        if 0 < on[:, j].sum() < len(on):
            per_tag[tag] = float(roc_auc_score(on[:, j], student[:, j]))
            pr.append(float(average_precision_score(on[:, j], student[:, j])))
    rows = corpus_rows(recipe, csvs)
    tracks: dict[str, list[int]] = defaultdict(list)
    for k, clip in enumerate(ids):
        row = rows.get(clip, {})
        if row.get("kind") in ("music", "midi"):
            tracks[file_of(clip)].append(k)
    top1 = top3 = same = near = halved = halved_same = halved_near = 0
    if method is None:
        chosen = saved["thresholds"]
    elif method in HEADLINE_METHODS:
        chosen = headline_thresholds([str(i) for i in saved["validation_ids"]],
                                     saved["validation_labels"].astype(bool),
                                     saved["validation_scores"], saved["thresholds"], method)
    else:
        chosen = choose_thresholds(saved["validation_labels"], saved["validation_scores"],
                                   method)
    student_on = student >= chosen
    for clips in tracks.values():
        t_mean, s_mean = teacher[clips].mean(axis=0), student[clips].mean(axis=0)
        t_top, s_top = np.argsort(-t_mean)[:3], np.argsort(-s_mean)[:3]
        top1 += int(t_top[0] == s_top[0])
        top3 += int(len(set(t_top) & set(s_top)) >= 2)
        is_same, is_near = headlines_agree(headline(on[clips]), headline(student_on[clips]))
        same, near = same + is_same, near + is_near
        # the teacher against itself: its headline of a track's odd clips against that of its
        # even clips, how far a headline of these short tracks holds at all
        ordered = sorted(clips, key=ids.__getitem__)
        if len(ordered) >= 2:
            is_same, is_near = headlines_agree(headline(on[ordered[0::2]]),
                                               headline(on[ordered[1::2]]))
            halved, halved_same, halved_near = (halved + 1, halved_same + is_same,
                                                halved_near + is_near)
    sources = sorted({rows[i]["source"] for i in ids if i in rows})
    files = [file_of(clip) for clip in ids]
    low, high = macro_roc_auc_interval(on, student, files)
    return {
        "csv": csvs or [recipe.data.options["csv"]], "split": split,
        "clips": len(ids), "files": len(set(files)), "sources": sources,
        "tags_scored": len(per_tag), "tags_never_or_always_on": len(tags) - len(per_tag),
        "roc_auc_macro": float(np.mean(list(per_tag.values()))),
        "roc_auc_macro_95": [low, high],
        "pr_auc_macro": float(np.mean(pr)),
        "mean_abs_difference": float(np.abs(student - teacher).mean()),
        "music_tracks": len(tracks),
        "headline_same_share": same / max(1, len(tracks)),
        "headline_half_shared_share": near / max(1, len(tracks)),
        "teacher_odd_against_even_clips": {
            "tracks": halved, "headline_same_share": halved_same / max(1, halved),
            "headline_half_shared_share": halved_near / max(1, halved)},
        "top1_share": top1 / max(1, len(tracks)),
        "top3_2_of_3_share": top3 / max(1, len(tracks)),
        "thresholds": method or "the run's",
        "tags_on_per_clip": {"teacher": float(on.sum(axis=1).mean()),
                             "student": float(student_on.sum(axis=1).mean())},
        "per_tag_roc_auc": dict(sorted(per_tag.items(), key=lambda kv: kv[1])),
        "below_0_8": [t for t, v in sorted(per_tag.items(), key=lambda kv: kv[1]) if v < 0.8],
    }


def held_out_files(recipe, csvs: list[str] | None) -> list[tuple[str, Path]]:
    """(source, file) of each held-out music file of the CSVs (the recipe's by default): the
    file a clip was cut from, under the corpus's unpacked packages."""
    root = corpus_root(recipe)
    files: dict[str, tuple[str, Path]] = {}
    for row in corpus_rows(recipe, csvs).values():
        if row["split"] != "test" or row["kind"] not in ("music", "midi"):
            continue
        stem = file_of(Path(row["path"]).with_suffix("").as_posix())  # clips/<package>/<path>
        if stem in files:
            continue
        base = root / "x" / row["source"] / stem.split("/", 2)[2]
        found = sorted(base.parent.glob(base.name + ".*"))
        if len(found) != 1:
            raise SystemExit(f"{stem}: {len(found)} files under {base.parent} (run "
                             "benchmarks/corpus.py again to unpack its package)")
        files[stem] = (row["source"], found[0])
    return sorted(files.values())


def tracks(run_dir: Path, recipe, csvs: list[str] | None) -> dict:
    """Each held-out music file whole, tagged by the teacher and the student on the daemon's
    engine: how often the headline ``streamtag tag`` shows is the teacher's."""
    import soundfile
    from tqdm import tqdm

    from streamtag.catalog.installed import resolve_model
    from streamtag.engine.tagging import tag_files
    from streamtag.model.inference import InferenceModel

    sys.path.insert(0, str(HERE))
    from corpus import RATE, decode

    teacher = InferenceModel.load(resolve_model(recipe.data.options["teacher"]), device="cpu")
    student = InferenceModel.load(run_dir / "model.pt", device="cpu")
    # the teacher's headlines of each file, whole and by halves, kept for the next run
    kept_path = recipe.train.cache_root() / "teacher-tracks" / f"{teacher.hash}.json"
    kept = json.loads(kept_path.read_text()) if kept_path.is_file() else {}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for source, path in tqdm(held_out_files(recipe, csvs), desc="tracks", unit="file"):
            audio = decode(path, folder)
            wavs = [folder / n for n in ("whole.wav", "first.wav", "second.wav")]
            soundfile.write(wavs[0], audio, RATE)
            key = f"{path}:{len(audio)}"
            if key not in kept:  # the halves only where the teacher tags them
                half = len(audio) // 2
                soundfile.write(wavs[1], audio[:half], RATE)
                soundfile.write(wavs[2], audio[half:], RATE)
                found = tag_files(wavs, teacher)
                bad = [r.error for r in found if r.error]
                if bad:
                    raise SystemExit(f"{path}: {bad[0]}")
                kept[key] = [r.tags for r in found]
            t_whole, t_first, t_second = kept[key]
            (s_whole,) = tag_files(wavs[:1], student)
            if s_whole.error:
                raise SystemExit(f"{path}: {s_whole.error}")
            same, near = headlines_agree(frozenset(t_whole), frozenset(s_whole.tags))
            halves_same, halves_near = headlines_agree(frozenset(t_first), frozenset(t_second))
            rows.append({"source": source, "file": path.name,
                         "seconds": round(len(audio) / RATE, 1),
                         "teacher": t_whole, "student": s_whole.tags,
                         "same": same, "half_shared": near,
                         "top_same": bool(t_whole) and t_whole[:1] == s_whole.tags[:1],
                         "teacher_halves_same": halves_same,
                         "teacher_halves_half_shared": halves_near})
    kept_path.parent.mkdir(parents=True, exist_ok=True)
    kept_path.write_text(json.dumps(kept) + "\n")

    def share(key: str) -> float:
        return sum(bool(r[key]) for r in rows) / max(1, len(rows))

    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)

    return {
        "csv": csvs or [recipe.data.options["csv"]], "files": len(rows),
        "hours": round(sum(r["seconds"] for r in rows) / 3600, 2),
        "headline_same_share": share("same"), "headline_half_shared_share": share("half_shared"),
        "top_tag_same_share": share("top_same"),
        "teacher_empty_share": sum(not r["teacher"] for r in rows) / max(1, len(rows)),
        "student_empty_share": sum(not r["student"] for r in rows) / max(1, len(rows)),
        "teacher_first_half_against_second": {
            "headline_same_share": share("teacher_halves_same"),
            "headline_half_shared_share": share("teacher_halves_half_shared")},
        "by_source": {s: {"files": len(of), "headline_same": sum(r["same"] for r in of),
                          "half_shared": sum(r["half_shared"] for r in of)}
                      for s, of in sorted(by_source.items())},
        "files_tagged": rows,
    }


def speed(streams: int, seconds: float) -> dict:
    models = ["default", "music-small", "musicnn-msd", "music"]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "streams.json"
        subprocess.run([sys.executable, str(HERE / "streams.py"), "--models", *models,
                        "--backends", "onnxruntime", "--streams", str(streams), "--seconds",
                        str(seconds), "--repeats", "1", "--skip-forward", "--json", str(out)],
                       check=True)
        return json.loads(out.read_text())


def main() -> None:
    from streamtag.train.metrics import THRESHOLD_METHODS
    from streamtag.train.recipe import load_recipe

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--recipe", type=Path, default=None,
                        help="default: the run's own recipe.toml")
    parser.add_argument("--thresholds", choices=THRESHOLD_METHODS + HEADLINE_METHODS,
                        default=None,
                        help="choose the student's thresholds by this method on the run's "
                             "validation predictions (default: the run's own; headline and "
                             "headline-f1: for the headline's rule on the validation files)")
    parser.add_argument("--csv", nargs="+", default=None, metavar="NAME",
                        help="measure on the split (--split) of these CSVs beside the corpus's, "
                             "together (default: the run's own test predictions)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="measure on this split of the CSVs (default: test, the held-out "
                             "sources; train: the clips the student was fitted to)")
    parser.add_argument("--tracks", action="store_true",
                        help="also tag each held-out music file whole with the teacher and the "
                             "student, and compare the headlines streamtag tag shows")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    if args.tracks and args.split != "test":
        parser.error("--tracks tags the held-out files whole: leave --split out with it")
    recipe = load_recipe(args.recipe or args.run_dir / "recipe.toml")
    result = agreement(args.run_dir, recipe, args.thresholds, args.csv, args.split)
    per_tag = result.pop("per_tag_roc_auc")
    print(json.dumps(result, indent=2))
    print(f"per-tag ROC-AUC against the teacher's tags, {args.split} split:")
    print(", ".join(f"{t} {v:.3f}" for t, v in per_tag.items()))
    name = "agreement" + ("" if not args.csv else "-" + "+".join(Path(c).stem for c in args.csv)) \
        + ("" if args.split == "test" else "-" + args.split) + ".json"
    (args.run_dir / name).write_text(
        json.dumps({**result, "per_tag_roc_auc": per_tag}, indent=2) + "\n")
    if args.tracks:
        found = tracks(args.run_dir, recipe, args.csv)
        (args.run_dir / name.replace("agreement", "tracks")).write_text(
            json.dumps(found, indent=2) + "\n")
        print(json.dumps({k: v for k, v in found.items() if k != "files_tagged"}, indent=2))
    if args.speed:
        print(json.dumps(speed(args.streams, args.seconds), indent=2))


if __name__ == "__main__":
    main()
