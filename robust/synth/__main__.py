"""``python -m robust.synth --out DIR ...``: render the synthetic Taskonomy dataset (see ``--help``)."""

from __future__ import annotations

import sys

from robust.io import TaskonomyDataset
from robust.runs import Run, parse_config
from robust.synth.dataset import SynthConfig, building_name, generate
from robust.synth.preview import contact_sheet
from robust.synth.render import DOMAINS

EPILOG = """Each building is a random room with furniture (OUT/<building>/scene.json); each point is a fixation
point on a surface, seen by VIEWS cameras (FoV 45-90 deg). Every view gets all Taskonomy domains:
rgb, depth_euclidean, depth_zbuffer, mask_valid, normal, reshading, relighting_0..9, segmentsemantic,
edge_texture, edge_occlusion, principal_curvature, keypoints2d, keypoints3d, point_info.

example: python -m robust.synth --out data/synth --buildings 2 --points 4 --views 3 --size 256 --preview"""


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(SynthConfig, argv, epilog=EPILOG)
    except ValueError as e:
        print(f"robust.synth: error: {e}", file=sys.stderr)
        return 2
    Run(cfg.out, cfg)
    keys = generate(cfg.out, cfg.buildings, cfg.points, cfg.views, cfg.size, cfg.seed, cfg.workers)
    print(f"robust.synth: {len(keys)} views in {cfg.out}")
    if cfg.preview:
        ds = TaskonomyDataset(cfg.out, DOMAINS, buildings=[building_name(0)])
        path = contact_sheet(ds[0], f"{cfg.out}/preview.png")
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
