"""synthseq: synthetic multi-view point-cloud sequences with exact poses, and a self-supervised trainer.

The four sub-packages live in the repository's top-level folders and install as
``synthseq.generator``, ``synthseq.datasets``, ``synthseq.training`` and ``synthseq.pipelines``
(see ``setup.cfg``). Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
