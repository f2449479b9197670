"""One-command GPU benchmark of the batched ``moderngl`` backend + the torch device path (issue 11).

Measures, on the default scene (pipelines/configs/default.yaml: ~10 objects, a room, 4 rig views + a
handheld view, Kinect noise, N = 2048 points + normals):

1. raw render rate: ``ModernglRenderer.render_frames`` (all T x V views of a sequence per call, one atlas
   readback per batch), view-frames/s at 320x240 and 640x480;
2. end to end in one process: ``generate_sequence(spec, renderer, device="cuda")`` (render, upload, Kinect
   model, sampling, back-projection and normals on the GPU, N points per view back) + ``ShardWriter``
   (HDF5 shards on local disk), view-frames/s;
3. the same in P processes (one EGL context and one CUDA context each), total view-frames/s;

with the GPU utilisation (``nvidia-smi``, sampled every 0.2 s) during each phase. Prints a markdown table
and writes ``bench_gpu.json`` to ``--out`` (``$OUT`` on the device machine). Each phase runs
``--seconds`` (default 20): the whole run takes ~3 minutes.

It needs only numpy, h5py, torch (with CUDA), and three small wheels: moderngl (+ glcontext), trimesh,
PyYAML. Neither open3d, ray nor pyrender is imported. synthseq does not have to be installed: the repository's
folders are mapped onto the ``synthseq.*`` names when the package is not importable.

On a machine with internet (this one), once::

    .venv/bin/python bench/bench_gpu.py --prepare       # wheels for cp312 + the meshes into .bench-gpu/

then on the GPU machine, with ``.bench-gpu`` carried along (an ignored path)::

    python3 bench/bench_gpu.py --install --out "$OUT"   # pip-installs the wheels (--no-deps), then measures

Other flags: ``--sizes 320x240 640x480``, ``--processes 8``, ``--device cuda``, ``--seconds 20``.
``--device cpu --seconds 3 --sizes 80x60`` runs the same code on a CPU (Mesa llvmpipe) to check the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench-gpu"


def set_cache(path: Path) -> None:
    global CACHE
    CACHE = Path(path).resolve()
WHEELS = ["moderngl==5.13.0", "glcontext==3.1.0", "trimesh==5.2.0", "PyYAML==6.0.2"]


# ------------------------------------------------------------------------------------------ setup

def prepare(python_version: str) -> None:
    """Download the wheels the GPU machine lacks (no dependencies) and copy the meshes, into .bench-gpu/."""
    import shutil

    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", python_version, "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(wheels), *WHEELS], check=True)
    meshes = REPO.parent / "shared" / "data" / "meshes"
    if meshes.is_dir():
        shutil.copytree(meshes, CACHE / "meshes", dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in CACHE.rglob("*") if p.is_file())
    print(f"prepared {CACHE} ({size / 1e6:.1f} MB): carry it to the GPU machine")


def install() -> None:
    """pip-install the prepared wheels into .bench-gpu/site (--target: no change to the system Python, no
    PEP 668 refusal) and put that folder on the path of this process and of its workers."""
    wheels = sorted((CACHE / "wheels").glob("*.whl"))
    if not wheels:
        raise SystemExit(f"no wheels in {CACHE / 'wheels'}: run --prepare on a machine with internet first")
    site = CACHE / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--upgrade",
                    "--target", str(site), *map(str, wheels)], check=True)
    use_site(site)


def use_site(site: Path) -> None:
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])


def import_synthseq():
    """``import synthseq``; when it is not installed, map the repository's folders onto synthseq.* (as
    setup.cfg's package_dir does) so the benchmark runs from a bare checkout."""
    try:
        import synthseq.generator.sequence  # noqa: F401
        return
    except ImportError:
        pass
    import importlib.machinery
    import importlib.util

    for name, folder in [("synthseq", "synthseq"), ("synthseq.generator", "generator"),
                         ("synthseq.generator.render", "generator/render"), ("synthseq.datasets", "datasets"),
                         ("synthseq.datasets.real", "datasets/real")]:
        if sys.modules.get(name) is not None:
            continue
        path = REPO / folder
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


# ------------------------------------------------------------------------------------------ GPU load

class Utilisation:
    """Samples ``nvidia-smi`` GPU utilisation (%) every ``period`` s in a thread, between start and stop."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = None

    def __enter__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=2).stdout.split()
                if out:
                    self.samples.append(float(out[0]))
            except (OSError, subprocess.SubprocessError, ValueError):
                return
            self._stop.wait(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=3)

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        s = sorted(self.samples)
        return f"mean {sum(s) / len(s):.0f}%, median {s[len(s) // 2]:.0f}%, max {s[-1]:.0f}%"


# ------------------------------------------------------------------------------------------ workloads

def load_config(size: str, meshes: str | None, frames: int | None):
    from synthseq.generator.config import load_generate_config

    w, h = (int(x) for x in size.lower().split("x"))
    overrides = [f"generate.cameras.width={w}", f"generate.cameras.height={h}"]
    if meshes:
        overrides.append(f"generate.objects.mesh_dir={Path(meshes).resolve()}")
    elif not (REPO.parent / "shared" / "data" / "meshes").is_dir():
        overrides += ["generate.objects.mesh_dir=null", "generate.objects.mesh_ratio=0.0"]
        print("note: no meshes found (pass --meshes): primitives only", flush=True)
    if frames:
        overrides.append(f"generate.num_frames={frames}")
    return load_generate_config(REPO / "pipelines" / "configs" / "default.yaml", overrides)


def raw_render(cfg, seconds: float, batch_pixels: int) -> dict:
    """render_frames over whole sequences, as generate_sequence calls it; geometry prepared before the clock."""
    import numpy as np

    from synthseq.generator.assets import object_geometry, room_geometry
    from synthseq.generator.render import RenderMesh, make_renderer
    from synthseq.generator.scene import make_spec

    jobs = []
    for i in range(4):
        spec = make_spec(cfg, 0, i)
        meshes = [RenderMesh(v, f, np.eye(4), k, key=f"s{i}-{k}")
                  for k, (v, f) in enumerate(object_geometry(o) for o in spec.objects)]
        rv, rf = room_geometry(spec.room_size, spec.room_ceiling)
        meshes.append(RenderMesh(rv, rf, np.eye(4), -1, key=f"s{i}-room"))
        poses = spec.object_poses()
        poses = np.concatenate([poses, np.broadcast_to(np.eye(4), (len(poses), 1, 4, 4))], axis=1)
        jobs.append((meshes, poses, spec.cameras.camera(), spec.camera_poses()))
    renderer = make_renderer("moderngl", max_batch_pixels=batch_pixels)
    try:
        renderer.render_frames(*jobs[0])  # warm-up: context, shader, first upload
        n, i, t0 = 0, 0, time.perf_counter()
        with Utilisation() as util:
            while time.perf_counter() - t0 < seconds:
                depth, _ = renderer.render_frames(*jobs[i % len(jobs)])
                n += depth.shape[0] * depth.shape[1]
                i += 1
            dt = time.perf_counter() - t0
        return {"view_frames": n, "seconds": dt, "vf_per_s": n / dt, "gpu": util.summary(),
                "gl_renderer": renderer.gl_renderer, "triangles": sum(len(m.faces) for m in jobs[0][0])}
    finally:
        renderer.close()


def end_to_end_worker(args) -> tuple[int, float]:
    """One process: generate_sequence on the device + ShardWriter, for ``seconds``; returns (view-frames, s)."""
    size, meshes, frames, device, seconds, batch_pixels, first_index, out_dir = args
    import_synthseq()
    from synthseq.datasets.shards import ShardWriter, sequence_key, shard_name
    from synthseq.generator.render import make_renderer
    from synthseq.generator.scene import make_spec
    from synthseq.generator.sequence import generate_sequence

    cfg = load_config(size, meshes, frames)
    renderer = make_renderer("moderngl", max_batch_pixels=batch_pixels)
    try:
        generate_sequence(make_spec(cfg, 0, first_index), renderer=renderer, device=device)  # warm-up
        n, index, shard, t0 = 0, first_index, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            with ShardWriter(Path(out_dir) / f"{first_index}-{shard_name(shard)}") as writer:
                for _ in range(4):  # 4 sequences per shard, as default.yaml
                    seq = generate_sequence(make_spec(cfg, 0, index), renderer=renderer, device=device)
                    writer.write(sequence_key(index), seq)
                    n += seq.num_frames * seq.num_views
                    index += 1
            shard += 1
        return n, time.perf_counter() - t0
    finally:
        renderer.close()


def end_to_end(size, meshes, frames, device, seconds, batch_pixels, processes: int) -> dict:
    import multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        jobs = [(size, meshes, frames, device, seconds, batch_pixels, 100000 * (p + 1), tmp) for p in range(processes)]
        with Utilisation() as util:
            t0 = time.perf_counter()
            if processes == 1:
                results = [end_to_end_worker(jobs[0])]
            else:
                with mp.get_context("spawn").Pool(processes) as pool:
                    results = pool.map(end_to_end_worker, jobs)
            wall = time.perf_counter() - t0
    n = sum(r[0] for r in results)
    # every process runs `seconds` after its own warm-up: the rate is the sum of the per-process rates
    return {"processes": processes, "view_frames": n, "vf_per_s": sum(r[0] / r[1] for r in results),
            "wall_s_incl_startup": wall, "gpu": util.summary()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="download the wheels and copy the meshes, then exit")
    ap.add_argument("--python-version", default="3.12", help="--prepare: the GPU machine's Python (3.12)")
    ap.add_argument("--install", action="store_true", help="pip-install the prepared wheels first")
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--device", default="cuda", help="torch device of the sensor/sampling path")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seconds", type=float, default=20.0, help="per measured phase")
    ap.add_argument("--frames", type=int, default=None, help="frames per sequence (default: the config's 30)")
    ap.add_argument("--batch-pixels", type=int, default=1 << 25, help="atlas pixels per draw (GPU memory)")
    ap.add_argument("--meshes", default=None, help="mesh folder (default: ../shared/data/meshes or "
                                                  ".bench-gpu/meshes)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for bench_gpu.json")
    ap.add_argument("--cache", type=Path, default=CACHE, help="folder of the prepared wheels and meshes")
    args = ap.parse_args()
    set_cache(args.cache)
    if args.prepare:
        prepare(args.python_version)
        return 0
    if args.install:
        install()
    elif (CACHE / "site").is_dir():
        use_site(CACHE / "site")
    if args.meshes is None and (CACHE / "meshes").is_dir():
        args.meshes = str(CACHE / "meshes")
    import_synthseq()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, torch "
          f"{torch.__version__}, CUDA device: {gpu}; sensor/sampling device: {args.device}", flush=True)
    rows, report = [], {"machine": platform.node(), "cpus": os.cpu_count(), "cuda": gpu, "device": args.device,
                        "results": []}
    for size in args.sizes:
        cfg = load_config(size, args.meshes, args.frames)
        r = raw_render(cfg, args.seconds, args.batch_pixels)
        print(f"GL_RENDERER: {r['gl_renderer']}, {r['triangles']} triangles in the first scene", flush=True)
        rows.append((size, "raw render_frames", 1, r["vf_per_s"], r["gpu"]))
        report["results"].append({"size": size, "phase": "raw", **r})
        print(rows[-1], flush=True)
        for p in args.processes:
            e = end_to_end(size, args.meshes, args.frames, args.device, args.seconds, args.batch_pixels, p)
            rows.append((size, "end to end (generate_sequence + HDF5)", p, e["vf_per_s"], e["gpu"]))
            report["results"].append({"size": size, "phase": "end_to_end", **e})
            print(rows[-1], flush=True)
    print("\n| size | what | processes | view-frames/s | GPU utilisation |\n|---|---|---|---|---|")
    for size, what, p, rate, util in rows:
        print(f"| {size} | {what} | {p} | {rate:.0f} | {util} |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "bench_gpu.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
