"""posestream pipeline: sources, model contract, inference backends, parse wiring, sinks, CLI.

I/O lives here, at the edges; the algorithms are pure array functions in ``kernels``.
"""
