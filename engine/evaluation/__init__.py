"""Evaluation of the base model and trained checkpoints: batched greedy generation (``generate``), the
metrics Acc/Fmt/Len/Rep (``metrics``), run labels from job lineage (``lineage``), the ``eval`` stage
(``stage``) and the run comparison behind ``sert-tui report runs`` (``report``)."""
