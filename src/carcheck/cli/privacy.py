"""``carcheck privacy detect IMAGE... [--json]``: the faces and licence plates the privacy blur hides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from ._common import console, esc

app = typer.Typer(help="The privacy blur's face and plate detector.", no_args_is_help=True)


@app.command("detect")
def detect(
    images: List[Path] = typer.Argument(..., help="Photos (any format carcheck reads)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"images": [{"path", "regions": [{"kind", '
                                 '"bbox_xywh", "score"}]}]} to stdout.'),
) -> None:
    """Faces and plates in each IMAGE, as the blur of every written image finds them.

    Boxes are ``[x, y, w, h]`` in pixels of the image as stored after its EXIF orientation (the regions the
    blur covers: already grown). Exit code 1 when an image cannot be read (named, with ``"error"`` in JSON)."""
    import numpy as np

    from ..data.images import ImageLoadError, decode_image
    from ..models.privacy import detector

    det, out, failed = detector(), [], False
    for path in images:
        try:
            d = decode_image(path)
        except ImageLoadError as e:
            failed = True
            out.append({"path": str(path), "error": str(e), "regions": []})
            continue
        sx, sy = d.width / d.array.shape[1], d.height / d.array.shape[0]
        regions = []
        for r in det.detect(d.array):
            x, y, w, h = r.bbox_xywh
            x0, y0 = int(x * sx), int(y * sy)
            regions.append({"kind": r.kind, "bbox_xywh": [x0, y0, min(d.width, int(np.ceil((x + w) * sx))) - x0,
                                                          min(d.height, int(np.ceil((y + h) * sy))) - y0],
                            "score": round(r.score, 4)})
        out.append({"path": str(path), "regions": regions})
    if as_json:
        print(json.dumps({"images": out}))
    else:
        for o in out:
            if "error" in o:
                console.print(f"{esc(o['path'])}: [red]error[/] {esc(o['error'])}")
                continue
            boxes = ", ".join(f"{r['kind']} {r['bbox_xywh']} {r['score']:.2f}" for r in o["regions"]) or "none"
            print(f"{o['path']}: {len(o['regions'])} region(s): {boxes}")
    if failed:
        raise typer.Exit(1)
