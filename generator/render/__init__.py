"""Rendering backends behind one interface; :func:`make_renderer` picks one by name and imports it lazily."""

from __future__ import annotations

from synthseq.errors import ConfigError
from synthseq.generator.render.base import Renderer, RenderMesh, RenderResult

# name -> (module, class, pip requirement named when the import fails)
_BACKENDS = {
    "raycast": ("synthseq.generator.render.raycast", "RaycastRenderer", "open3d-cpu==0.20.0"),
    "pyrender": ("synthseq.generator.render.pyrender", "PyrenderRenderer", "pyrender==0.1.45 PyOpenGL==3.1.0"),
    "moderngl": ("synthseq.generator.render.moderngl", "ModernglRenderer", "moderngl==5.13.0"),
}

RENDERER_NAMES = tuple(_BACKENDS)

__all__ = ["RENDERER_NAMES", "Renderer", "RenderMesh", "RenderResult", "make_renderer"]


# (name, threads, options) -> a renderer kept for the life of the process (make_renderer(shared=True))
_SHARED: dict = {}


class _SharedRenderer:
    """A handle on a process-wide renderer: everything is delegated, ``close()`` only drops the handle.

    Creating a GL renderer costs seconds of shader compilation on llvmpipe (measured 1-4 s per process at
    the first draw), which a build would otherwise pay once per shard task; the process-wide renderer pays
    it once per worker. Its caches are bounded, so a long-lived worker's memory stays flat."""

    def __init__(self, renderer):
        self._renderer = renderer

    def __getattr__(self, attr):
        return getattr(self._renderer, attr)

    def close(self) -> None:
        """Drop this handle; the shared renderer lives on until the process exits."""


def _close_shared() -> None:
    for renderer in _SHARED.values():
        try:
            renderer.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass
    _SHARED.clear()


def make_renderer(name: str, key: str = "generate.renderer", threads: int | None = None, shared: bool = False,
                  **options) -> Renderer:
    """Create the renderer called ``name`` (``"raycast"``, ``"pyrender"`` or ``"moderngl"``).

    Args:
        name: backend name.
        key: the config key path the name came from, for error messages.
        threads: CPU threads the caller reserved for rendering (a build task's CPU share), or None for the
            backend's default: raycast's ``nthreads``; for the OpenGL backends Mesa llvmpipe's rasteriser
            threads (``LP_NUM_THREADS``, read when a process creates its first GL context; GPU drivers
            ignore it). Two workers on two cores each with llvmpipe's default of one thread per core would
            oversubscribe the cores.
        shared: return a handle on one renderer per (name, threads, options) kept for the life of the
            process (its ``close()`` drops only the handle): what a build worker running many tasks wants.
        **options: passed to the backend's constructor (``nthreads`` for raycast;
            ``znear_m`` / ``zfar_m`` for pyrender; ``znear_m`` / ``zfar_m`` / ``max_batch_pixels`` /
            ``egl_device`` / ``cull_closed`` for moderngl).

    Returns:
        A :class:`Renderer`. Call ``close()`` when done (pyrender holds a GL context).

    Raises:
        ConfigError: unknown name, naming the valid ones.
        ImportError: the backend's optional dependency is missing, naming the pip package.
    """
    if name not in _BACKENDS:
        valid = ", ".join(repr(n) for n in _BACKENDS)
        raise ConfigError(f"{key}: expected one of {valid}, got {name!r}")
    if shared:
        shared_key = (name, threads, tuple(sorted(options.items())))
        if shared_key not in _SHARED:
            if not _SHARED:
                import atexit

                atexit.register(_close_shared)
            _SHARED[shared_key] = make_renderer(name, key, threads, **options)
        return _SharedRenderer(_SHARED[shared_key])
    module_name, class_name, requirement = _BACKENDS[name]
    import importlib

    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"make_renderer: threads must be >= 1, got {threads}")
        if name == "raycast":
            options.setdefault("nthreads", int(threads))
        else:
            # One llvmpipe thread per reserved core beyond the calling thread: with one core, render in the
            # calling thread (LP_NUM_THREADS=0), measured fastest for one worker per core (BENCHMARKS.md).
            import os

            os.environ["LP_NUM_THREADS"] = str(int(threads) if int(threads) > 1 else 0)

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"renderer {name!r} needs {requirement}: pip install {requirement} "
            f"(or pip install 'synthseq[render]'); import failed with: {e}"
        ) from e
    return getattr(module, class_name)(**options)
