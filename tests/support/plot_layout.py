"""What a reader of a picture sees cut off or overprinted, checked on its boxes."""

from __future__ import annotations


def laid_out(figure) -> dict[str, list]:
    """Checks what a reader of the picture would see cut off or overprinted: every label
    inside the picture; each strip's labels (its name and tags, the times under it, the
    titles above it) clear of every other strip's, of the colour bar and of the legend.
    Returns each strip's boxes (and the bar's and legend's), drawn at the picture's size."""
    from matplotlib.transforms import Bbox

    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    whole = figure.bbox

    groups: dict[str, list] = {}
    for ax in figure.axes:
        if ax.get_label() == "<colorbar>":
            groups["colour bar"] = [ax.get_tightbbox(renderer)]
            continue
        # its labels, and the texts over it drawn unclipped (the titles; a span's label is
        # clipped to its strip)
        texts = (ax.get_xticklabels() + ax.get_yticklabels() + [
            ax.xaxis.label, ax.yaxis.label, ax.xaxis.get_offset_text()]
            + [t for t in ax.texts if not t.get_clip_on()])
        groups[ax.get_ylabel().split("\n")[0]] = [ax.bbox] + [
            t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]
    for n, legend in enumerate(figure.legends):
        groups[f"legend {n}"] = [legend.get_window_extent(renderer)]
    for name, boxes in groups.items():
        for box in boxes:
            assert (box.x0 >= whole.x0 - 1 and box.y0 >= whole.y0 - 1
                    and box.x1 <= whole.x1 + 1 and box.y1 <= whole.y1 + 1), (name, box, whole)
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for box in groups[a]:
                for other in groups[b]:
                    assert Bbox.intersection(box, other) is None, (a, box, b, other)
    return groups
