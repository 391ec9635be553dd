"""``python -m workers.cli``: the ``dora-forwarder`` command."""

import sys

from workers.cli.main import main

sys.exit(main())
