"""Full build rate (view-frames/s incl. noise, sampling, HDF5, manifest) with 1 and 2 workers, and the peak
RSS of a Ray worker after 100 vs 1000 sequences.

    .venv/bin/python bench/bench_build.py                      # rates, default config, 1 and 2 workers
    .venv/bin/python bench/bench_build.py --rss                # + worker RSS after 100 vs 1000 sequences
    .venv/bin/python bench/bench_build.py --cli --num-sequences 24 --workers 2 --renderers moderngl raycast

Ray is started before the clock starts (its start-up is not part of the build rate), except with ``--cli``:
that times the whole command ``synthseq build CONFIG --num-sequences N --workers W --set
generate.renderer=R`` as a user runs it (Python and Ray start-up, spec making, rendering, HDF5, hashing,
manifest; with the build's local helper unless ``SYNTHSEQ_BUILD_HELPER=0`` is set), ``--repeat`` times per renderer, with the load average before and after each run (the machine
is shared: repeat when the load was high). ``--cli --profile`` runs that command once per renderer and shows
where its time goes: the build's own timeline (``SYNTHSEQ_BUILD_TIMELINE``: driver and task events with
their process CPU time) and the CPU time of every process of the command (driver, Ray's GCS, raylet,
dashboard, agents, workers), sampled every 50 ms with psutil.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def timed_build(cfg, workers: int) -> dict:
    import ray

    from synthseq.pipelines.build import build_dataset

    cfg.build.workers = workers
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
    summaries = []
    try:
        # warm-up: one sequence per worker so imports and renderer start-up are not counted
        with tempfile.TemporaryDirectory() as warm:
            import copy

            wcfg = copy.deepcopy(cfg)
            wcfg.build.num_sequences = workers
            wcfg.build.sequences_per_shard = 1
            build_dataset(wcfg, Path(warm) / "ds", progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            build_dataset(cfg, Path(tmp) / "ds", progress=False, on_shard=summaries.append)
            wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    vf = sum(s["view_frames"] for s in summaries)
    return {"workers": workers, "wall_s": wall, "view_frames": vf, "vf_per_s": vf / wall,
            "seq_per_s": cfg.build.num_sequences / wall}


def rss_run(cfg, total: int, per_shard: int) -> list[tuple[int, int]]:
    """Build ``total`` sequences on one worker; returns (sequences done, worker peak RSS kB) per shard."""
    import ray

    from synthseq.pipelines.build import build_dataset

    cfg.build.workers = 1
    cfg.build.num_sequences = total
    cfg.build.sequences_per_shard = per_shard
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    points = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def record(s):
                points.append((len(points) + 1) * per_shard)
                points[-1] = (points[-1], s["maxrss_kb"], s["pid"])

            build_dataset(cfg, Path(tmp) / "ds", progress=True, on_shard=record)
    finally:
        ray.shutdown()
    return points


def cli_runs(config: str, num_sequences: int, workers: int, renderers, repeat: int, overrides) -> None:
    """Time the user's command end to end (issue 11's target: >= 250 view-frames/s at 320x240, 2 cores)."""
    import shutil
    import subprocess
    import sys

    from synthseq.pipelines.config import load_config

    cfg = load_config(config, list(overrides))
    view_frames = num_sequences * cfg.generate.num_frames * cfg.generate.cameras.num_views
    synthseq = str(Path(sys.executable).with_name("synthseq"))
    print(f"`synthseq build {config} --num-sequences {num_sequences} --workers {workers}` "
          f"({view_frames} view-frames at {cfg.generate.cameras.width}x{cfg.generate.cameras.height})")
    print("| renderer | run | wall s | view-frames/s | load before | load after |\n|---|---|---|---|---|---|")
    for renderer in renderers:
        for run in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "ds"
                cmd = [synthseq, "build", config, "--num-sequences", str(num_sequences), "--workers", str(workers),
                       "--out", str(out), "--set", f"generate.renderer={renderer}"]
                for o in overrides:
                    cmd += ["--set", o]
                load0 = os.getloadavg()[0]
                t0 = time.perf_counter()
                done = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                load1 = os.getloadavg()[0]
                shutil.rmtree(out, ignore_errors=True)
            if done.returncode != 0:
                print(f"| {renderer} | {run + 1} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                continue
            print(f"| {renderer} | {run + 1} | {wall:.1f} | {view_frames / wall:.1f} | {load0:.1f} | {load1:.1f} |",
                  flush=True)


def _process_kind(cmdline: list[str]) -> str:
    """A name for a process of the build command: the driver, a Ray system process, a Ray worker (Ray's
    processes retitle themselves, e.g. ``ray::IDLE``, ``ray::build_shard``, ``ray::DashboardAgent``)."""
    text = " ".join(cmdline)
    exe = text.split(" ", 1)[0].rsplit("/", 1)[-1]
    if exe in ("gcs_server", "raylet"):
        return f"ray: {exe}"
    for needle, kind in (("DashboardAgent", "ray: dashboard agent"), ("dashboard/agent.py", "ray: dashboard agent"),
                         ("RuntimeEnvAgent", "ray: runtime env agent"), ("runtime_env/agent", "ray: runtime env agent"),
                         ("ray::", "ray: worker"), ("default_worker.py", "ray: worker"),
                         ("dashboard/dashboard.py", "ray: dashboard head"), ("log_monitor.py", "ray: log monitor"),
                         ("monitor.py", "ray: autoscaler monitor"), ("ray_process_reaper", "ray: reaper"),
                         ("synthseq build", "driver (synthseq build)")):
        if needle in text:
            return kind
    return text[:60] or "?"


def profile_run(config: str, num_sequences: int, workers: int, renderer: str, overrides) -> None:
    """Run the user's command once and print its timeline and the CPU time of each of its processes."""
    import json
    import shutil
    import subprocess
    import sys

    import psutil

    synthseq = str(Path(sys.executable).with_name("synthseq"))
    with tempfile.TemporaryDirectory() as tmp:
        out, timeline = Path(tmp) / "ds", Path(tmp) / "timeline.jsonl"
        cmd = [synthseq, "build", config, "--num-sequences", str(num_sequences), "--workers", str(workers),
               "--out", str(out), "--no-progress", "--set", f"generate.renderer={renderer}"]
        for o in overrides:
            cmd += ["--set", o]
        env = dict(os.environ, SYNTHSEQ_BUILD_TIMELINE=str(timeline))
        load0 = os.getloadavg()[0]
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        root = psutil.Process(proc.pid)
        seen: dict[int, dict] = {}  # pid -> kind, cpu (last sample), first/last seen
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            now = time.time() - t0
            for p in procs:
                try:
                    with p.oneshot():
                        c = p.cpu_times()
                        info = seen.setdefault(p.pid, {"start": p.create_time() - t0})
                        # each time: a process caught between fork and exec still shows its parent's command
                        info["kind"] = _process_kind(p.cmdline())
                        info["cpu"] = c.user + c.system
                        info["last"] = now
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            time.sleep(0.05)
        output = proc.communicate()[0]
        wall = time.time() - t0
        load1 = os.getloadavg()[0]
        events = [json.loads(line) for line in timeline.read_text().splitlines()] if timeline.exists() else []
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n### {renderer}: `{' '.join(cmd[1:]).replace(str(out), 'OUT')}`")
    print(f"wall {wall:.1f} s, exit {proc.returncode}, load average {load0:.1f} -> {load1:.1f}; "
          f"{output.strip().splitlines()[-1] if output.strip() else ''}\n")
    role = {}
    for e in events:
        if e["pid"] not in role:
            role[e["pid"]] = ("driver" if e["event"].startswith("driver") else "helper" if e["event"].startswith("helper")
                              else f"worker {sum(r.startswith('worker') for r in role.values()) + 1}")
    for pid, info in seen.items():  # the helper is a fork of the driver: the same command line
        if role.get(pid) == "helper":
            info["kind"] = "build helper (forked driver)"
    print("| t (s) | process | event | its CPU s |\n|---|---|---|---|")
    for e in events:
        extra = ", ".join(f"{k} {v}" for k, v in e.items() if k not in ("t", "cpu", "pid", "event"))
        print(f"| {e['t'] - t0:.2f} | {role[e['pid']]} | {e['event']}{' (' + extra + ')' if extra else ''} | "
              f"{e['cpu']:.2f} |")
    kinds: dict[str, list] = {}
    for info in seen.values():
        kinds.setdefault(info["kind"], []).append(info)
    print("\n| process (kind) | count | CPU s (sampled) | started at (s) | last seen (s) |\n|---|---|---|---|---|")
    for kind, infos in sorted(kinds.items(), key=lambda kv: -sum(i["cpu"] for i in kv[1])):
        print(f"| {kind} | {len(infos)} | {sum(i['cpu'] for i in infos):.2f} | "
              f"{min(i['start'] for i in infos):.2f} | {max(i['last'] for i in infos):.2f} |")
    total = sum(i["cpu"] for i in seen.values())
    print(f"| all | {len(seen)} | {total:.2f} | | |\n\nCPU busy {total / wall:.2f} of {os.cpu_count()} cores "
          f"over the {wall:.1f} s")
    workers = sorted((i for i in seen.values() if i["kind"] == "ray: worker"), key=lambda i: i["start"])
    print("Ray workers: " + "; ".join(f"CPU {i['cpu']:.2f} s, alive {i['start']:.2f}-{i['last']:.2f} s"
                                      for i in workers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--num-sequences", type=int, default=8)
    ap.add_argument("--sequences-per-shard", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rss", action="store_true", help="also measure worker RSS after 100 vs 1000 sequences")
    ap.add_argument("--rss-frames", type=int, default=2, help="frames per sequence in the RSS run")
    ap.add_argument("--cli", action="store_true", help="time the whole `synthseq build` command instead")
    ap.add_argument("--renderers", nargs="+", default=["moderngl", "raycast"], help="--cli: renderers to run")
    ap.add_argument("--repeat", type=int, default=1, help="--cli: runs per renderer")
    ap.add_argument("--profile", action="store_true",
                    help="--cli: one run per renderer with the build's timeline and per-process CPU time")
    args = ap.parse_args()
    if args.cli and args.profile:
        for renderer in args.renderers:
            profile_run(args.config, args.num_sequences, args.workers[-1], renderer, args.overrides)
        return
    if args.cli:
        cli_runs(args.config, args.num_sequences, args.workers[-1], args.renderers, args.repeat, args.overrides)
        return

    from synthseq.pipelines.config import load_config

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    base = [f"build.num_sequences={args.num_sequences}", f"build.sequences_per_shard={args.sequences_per_shard}",
            *args.overrides]
    rows = [timed_build(load_config(args.config, base), w) for w in args.workers]
    print(f"\nconfig {args.config} {' '.join(args.overrides)}: {args.num_sequences} sequences")
    print("| workers | wall s | view-frames | view-frames/s | sequences/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['wall_s']:.1f} | {r['view_frames']} | {r['vf_per_s']:.1f} | "
              f"{r['seq_per_s']:.2f} |")
    if len(rows) >= 2:
        print(f"scaling {rows[1]['workers']} vs {rows[0]['workers']} workers: "
              f"{rows[1]['vf_per_s'] / rows[0]['vf_per_s']:.2f}x")
    if args.rss:
        cfg = load_config(args.config, [f"generate.num_frames={args.rss_frames}", *args.overrides])
        points = rss_run(cfg, 1000, 10)
        pids = {p for _, _, p in points}
        at100 = next(r for n, r, _ in points if n >= 100)
        at1000 = points[-1][1]
        print(f"\nworker peak RSS ({len(pids)} worker process(es)): after 100 sequences {at100 / 1024:.0f} MiB, "
              f"after 1000 sequences {at1000 / 1024:.0f} MiB ({100 * (at1000 / at100 - 1):+.1f}%)")


if __name__ == "__main__":
    main()
