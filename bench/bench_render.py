"""Raw depth rendering rate (view-frames/s) of each backend on the default config's scenes, the sensor model's
cost, and whole ``generate_sequence`` per view-frame.

    .venv/bin/python bench/bench_render.py                        # every backend, 320x240 and 640x480
    .venv/bin/python bench/bench_render.py --backends raycast moderngl --sizes 320x240 --threads 1

The scenes are the default config's (pipelines/configs/default.yaml: ~10 objects, primitives and real meshes,
a room, 4 rig views + a handheld view): the first ``--sequences`` sequences of seed 0, every frame, every view,
rendered as ``generate_sequence`` renders them: ``render_frames`` over a whole sequence (raycast: static scene
once, movers per frame; moderngl: all views of a chunk in one atlas; pyrender: frame by frame). Geometry is
prepared before the clock. Every (backend, threads) runs in its own process, because Mesa's llvmpipe reads
``LP_NUM_THREADS`` once per process (``threads`` = 1 renders in the calling thread, LP_NUM_THREADS=0).
Prints a markdown table with the load average beside it: the machine is shared, so CPU ms per view is the
steadier number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO = Path(__file__).resolve().parents[1]


def load_sequences(config: Path, num_sequences: int, num_frames: int | None, width: int, height: int):
    """[(meshes, world_from_objects (T, M, 4, 4), camera, world_from_cameras (T, V, 4, 4))], one per sequence."""
    import numpy as np

    from synthseq.generator.assets import object_geometry, room_geometry
    from synthseq.generator.config import load_generate_config
    from synthseq.generator.render import RenderMesh
    from synthseq.generator.scene import make_spec

    overrides = [f"generate.cameras.width={width}", f"generate.cameras.height={height}"]
    if num_frames:
        overrides.append(f"generate.num_frames={num_frames}")
    cfg = load_generate_config(config, overrides)
    out = []
    for index in range(num_sequences):
        spec = make_spec(cfg, 0, index)
        meshes = [RenderMesh(v, f, np.eye(4), k, key=f"{spec.name}-{k}")
                  for k, (v, f) in enumerate(object_geometry(o) for o in spec.objects)]
        poses = spec.object_poses()
        if spec.room_size is not None:
            rv, rf = room_geometry(spec.room_size, spec.room_ceiling)
            meshes.append(RenderMesh(rv, rf, np.eye(4), -1, key=f"{spec.name}_room"))
            poses = np.concatenate([poses, np.broadcast_to(np.eye(4), (len(poses), 1, 4, 4))], axis=1)
        out.append((meshes, poses, spec.cameras.camera(), spec.camera_poses()))
    return cfg, out


def bench_one(args) -> dict:
    """Runs inside the child process: one backend, one size, one thread count."""
    from synthseq.generator.render import make_renderer
    from synthseq.generator.render.base import render_frames

    w, h = (int(x) for x in args.size.lower().split("x"))
    cfg, sequences = load_sequences(args.config, args.sequences, args.frames, w, h)
    renderer = make_renderer(args.backend, threads=args.threads)
    try:
        render_frames(renderer, *sequences[0])  # warm-up: GL context, shaders, first uploads
        best = best_cpu = None
        n = 0
        for _ in range(args.repeat):
            n = 0
            t0, c0 = time.perf_counter(), time.process_time()
            for seq in sequences:
                depth, _ = render_frames(renderer, *seq)
                n += depth.shape[0] * depth.shape[1]
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best = dt if best is None else min(best, dt)
            best_cpu = dc if best_cpu is None else min(best_cpu, dc)
        result = {"view_frames": n, "seconds": best, "vf_per_s": n / best, "cpu_ms_per_view": 1000 * best_cpu / n,
                  "triangles": sum(len(m.faces) for m in sequences[0][0])}
        if args.sensor:
            result.update(bench_sensor(cfg, renderer, sequences[0]))
        return result
    finally:
        renderer.close()


def bench_sensor(cfg, renderer, sequence) -> dict:
    """CPU ms per view of the sensor model (apply_sensor_batch over a sequence's views) and of sampling."""
    import numpy as np

    from synthseq.generator.render.base import render_frames
    from synthseq.generator.sensor import apply_sensor_batch
    from synthseq.generator.sequence import sample_view

    depth, instance = render_frames(renderer, *sequence)
    camera = sequence[2]
    B = depth.shape[0] * depth.shape[1]
    depth, instance = depth.reshape(B, *depth.shape[2:]), instance.reshape(B, *instance.shape[2:])
    rng = np.random.default_rng(0)
    c0 = time.process_time()
    d, i = apply_sensor_batch(depth, instance, camera, cfg.sensor, rng)
    sensor = time.process_time() - c0
    c0 = time.process_time()
    for b in range(B):
        sample_view(d[b], i[b], camera.intrinsics, cfg.num_points, rng, depth[b], instance[b])
    sample = time.process_time() - c0
    return {"sensor_ms_per_view": 1000 * sensor / B, "sample_normals_ms_per_view": 1000 * sample / B}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "pipelines" / "configs" / "default.yaml")
    ap.add_argument("--backends", nargs="+", default=["raycast", "moderngl", "pyrender"])
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--sequences", type=int, default=2, help="sequences of the config to render")
    ap.add_argument("--frames", type=int, default=None, help="frames per sequence (default: the config's)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="rendering threads to try (make_renderer(threads=...)); default 1 and 2")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes; the fastest is reported")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child: backend,size,threads
    args = ap.parse_args(argv)

    if args.one:
        args.backend, args.size, threads = args.one.split(",")
        args.threads, args.sensor = int(threads), True
        print(json.dumps(bench_one(args)))
        return 0

    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"scene: {args.config.name}, {args.sequences} sequences x {args.frames or 'all'} frames\n")
    print("| backend | size | threads | view-frames | seconds | view-frames/s | CPU ms/view | sensor ms/view "
          "| sampling+normals ms/view | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.backends:
        for size in args.sizes:
            for threads in args.threads:
                cmd = [sys.executable, __file__, "--one", f"{name},{size},{threads}", "--config", str(args.config),
                       "--sequences", str(args.sequences), "--repeat", str(args.repeat)]
                if args.frames:
                    cmd += ["--frames", str(args.frames)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"| {name} | {size} | {threads} | failed: {out.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {name} | {size} | {threads} | {r['view_frames']} | {r['seconds']:.2f} | "
                      f"{r['vf_per_s']:.1f} | {r['cpu_ms_per_view']:.2f} | {r['sensor_ms_per_view']:.2f} | "
                      f"{r['sample_normals_ms_per_view']:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
