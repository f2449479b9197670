"""Raw depth rendering rate (view-frames/s) of each backend on the default config's scenes, plus the sensor cost.

    .venv/bin/python bench/bench_render.py                       # both backends, 320x240 and 640x480
    .venv/bin/python bench/bench_render.py --backends raycast raycast-ref --sizes 320x240 --threads 1

The scenes are the default config's (pipelines/configs/default.yaml: ~10 objects, primitives and real meshes,
a room, 4 rig views + a handheld view): the first ``--sequences`` sequences of seed 0, every frame, every view,
rendered with ``render_views`` (one scene state per frame shared by its views). Scene construction (specs,
geometry) happens before the clock starts; the clock covers rendering only (per-frame BVH build / pose
updates included), and separately ``apply_sensor`` with the config's sensor model. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO = Path(__file__).resolve().parents[1]


def load_frames(config: Path, num_sequences: int, num_frames: int | None):
    """[(meshes, camera, world_from_cameras (V, 4, 4))] for every frame of the first sequences."""
    from synthseq.generator.assets import object_geometry, room_geometry
    from synthseq.generator.config import load_generate_config
    from synthseq.generator.render import RenderMesh
    from synthseq.generator.scene import make_spec

    overrides = [f"generate.num_frames={num_frames}"] if num_frames else []
    cfg = load_generate_config(config, overrides)
    frames = []
    for index in range(num_sequences):
        spec = make_spec(cfg, 0, index)
        geometries = [object_geometry(o) for o in spec.objects]
        room = None
        if spec.room_size is not None:
            rv, rf = room_geometry(spec.room_size, spec.room_ceiling)
            room = RenderMesh(rv, rf, __import__("numpy").eye(4), -1, key=f"{spec.name}_room")
        object_poses = spec.object_poses()
        camera_poses = spec.camera_poses()
        camera = spec.cameras.camera()
        for t in range(spec.num_frames):
            meshes = [
                RenderMesh(v, f, object_poses[t, k], k, key=obj.name)
                for k, (obj, (v, f)) in enumerate(zip(spec.objects, geometries))
            ]
            if room is not None:
                meshes.append(room)
            frames.append((meshes, camera, camera_poses[t]))
    return cfg, frames


def scaled(camera, width: int, height: int):
    """The same field of view at another image size."""
    from synthseq.datasets.types import Camera

    sx, sy = width / camera.width, height / camera.height
    return Camera.from_focal(
        camera.fx * sx, camera.fy * sy, (camera.cx + 0.5) * sx - 0.5, (camera.cy + 0.5) * sy - 0.5, width, height
    )


def bench_backend(name: str, frames, width: int, height: int, threads: int | None, repeat: int) -> dict:
    from synthseq.generator.render import make_renderer

    options = {"nthreads": threads} if (name.startswith("raycast") and threads is not None) else {}
    if name == "raycast-ref":  # one ray per pixel, no coarse room path: the reference the fast path must equal
        name, options["coarse_step"] = "raycast", 0
    renderer = make_renderer(name, **options)
    try:
        cams = {}

        def run(subset):
            n = 0
            for meshes, camera, poses in subset:
                cam = cams.setdefault(id(camera), scaled(camera, width, height))
                n += len(renderer.render_views(meshes, [cam] * len(poses), poses))
            return n

        run(frames[:2])  # warm-up: GL context, shader compilation, first uploads
        best = best_cpu = None
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            n = run(frames)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best = dt if best is None else min(best, dt)
            best_cpu = dc if best_cpu is None else min(best_cpu, dc)
        # CPU time of this process (all its threads; llvmpipe's threads included): on a shared machine it
        # says what the work costs even when the wall clock is stretched by other load.
        return {"view_frames": n, "seconds": best, "vf_per_s": n / best, "cpu_ms_per_view": 1000 * best_cpu / n}
    finally:
        renderer.close()


def bench_sensor(cfg, frames, repeat: int) -> dict:
    import numpy as np

    from synthseq.generator.render import make_renderer
    from synthseq.generator.sensor import apply_sensor

    renderer = make_renderer("raycast")
    meshes, camera, poses = frames[0]
    images = renderer.render_views(meshes, [camera] * len(poses), poses)
    renderer.close()
    rng = np.random.default_rng(0)
    n = 200
    best = None
    for _ in range(repeat):
        c0 = time.process_time()
        for i in range(n):
            res = images[i % len(images)]
            apply_sensor(res.depth, res.instance, camera, cfg.sensor, rng)
        dc = time.process_time() - c0
        best = dc if best is None else min(best, dc)
    return {"ms_per_view": 1000 * best / n, "model": cfg.sensor.model, "size": f"{camera.width}x{camera.height}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "pipelines" / "configs" / "default.yaml")
    ap.add_argument("--backends", nargs="+", default=["raycast", "pyrender"],
                    help="raycast, pyrender, or raycast-ref (a ray per pixel, no coarse room path)")
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--sequences", type=int, default=2, help="sequences of the config to render")
    ap.add_argument("--frames", type=int, default=10, help="frames per sequence (default 10)")
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                    help="raycast cast_rays threads to try (0 = all cores; default: 0 and 1)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes; the fastest is reported")
    args = ap.parse_args(argv)

    cfg, frames = load_frames(args.config, args.sequences, args.frames)
    num_views = len(frames[0][2])
    num_tris = sum(len(m.faces) for m in frames[0][0])
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"scene: {args.config.name}, {args.sequences} sequences x {args.frames} frames x {num_views} views, "
          f"{len(frames[0][0])} meshes / {num_tris} triangles in the first frame\n")
    print("| backend | size | threads | view-frames | seconds | view-frames/s | wall ms/view | CPU ms/view |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.backends:
        for size in args.sizes:
            w, h = (int(x) for x in size.lower().split("x"))
            for threads in (args.threads if name.startswith("raycast") else [None]):
                r = bench_backend(name, frames, w, h, threads, args.repeat)
                label = ("all" if threads == 0 else threads) if name.startswith("raycast") else "llvmpipe"
                print(f"| {name} | {w}x{h} | {label} | {r['view_frames']} | {r['seconds']:.2f} | "
                      f"{r['vf_per_s']:.1f} | {1000 / r['vf_per_s']:.2f} | {r['cpu_ms_per_view']:.2f} |", flush=True)
    s = bench_sensor(cfg, frames, args.repeat)
    print(f"\napply_sensor ({s['model']}, {s['size']}): {s['ms_per_view']:.2f} CPU ms/view")
    return 0


if __name__ == "__main__":
    sys.exit(main())
