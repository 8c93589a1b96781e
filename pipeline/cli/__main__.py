"""``python -m posestream.pipeline.cli``: the same as the ``posestream`` command."""
import sys

from posestream.pipeline.cli.main import main

sys.exit(main())
