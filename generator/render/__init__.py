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


def make_renderer(name: str, key: str = "generate.renderer", **options) -> Renderer:
    """Create the renderer called ``name`` (``"raycast"`` or ``"pyrender"``).

    Args:
        name: backend name.
        key: the config key path the name came from, for error messages.
        **options: passed to the backend's constructor (``nthreads`` for raycast; ``egl_device`` /
            ``znear_m`` / ``zfar_m`` for pyrender).

    Returns:
        A :class:`Renderer`. Call ``close()`` when done (pyrender holds a GL context).

    Raises:
        ConfigError: unknown name, naming the valid ones.
        ImportError: the backend's optional dependency is missing, naming the pip package.
    """
    if name not in _BACKENDS:
        valid = ", ".join(repr(n) for n in _BACKENDS)
        raise ConfigError(f"{key}: expected one of {valid}, got {name!r}")
    module_name, class_name, requirement = _BACKENDS[name]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"renderer {name!r} needs {requirement}: pip install {requirement} "
            f"(or pip install 'synthseq[render]'); import failed with: {e}"
        ) from e
    return getattr(module, class_name)(**options)
