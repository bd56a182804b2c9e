"""Engines that run ``spamfilter filter`` beyond one process (``--engine ray``).

The local engine (``pipeline``) and the service never import this package: Ray is an extra
(``pip install 'spamfilter-gpt2[ray]'``), and only ``engines.ray`` imports it.

- ``chunks``: the unit of work without Ray: an input cut into the local engine's chunks, their text
  for the model, their tagged output;
- ``outputs``: the output folder: chunk files, atomic assembly, completion records, the verdict table;
- ``ray``: the Ray Data pipeline and the driver that assembles what it writes.
"""
