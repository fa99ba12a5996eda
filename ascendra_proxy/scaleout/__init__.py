"""Scale-out: stream workers that relay tokens, one scheduler that decides.

``messages`` (the wire schema), ``brain`` (the scheduler's sans-I/O state machine),
``scheduler`` (its process), ``worker`` (the worker's policy stand-in and link), ``lease``
(leader election), ``supervisor`` (``serve --workers N``).  Protocol and operations:
``docs/scale-out.md``.
"""
