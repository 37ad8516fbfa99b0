"""`python -m pdp.cli.telemetry_writer FD`: the telemetry writer process `pdp serve` starts.

It pairs the server's wire decoding with telemetry's writer loop (pdp.telemetry.offload);
only the CLI layer may import both.
"""

from __future__ import annotations

import sys

from pdp.server.wire import decode_observation
from pdp.telemetry.offload import child_main


def main() -> int:
    return child_main(decode_observation, int(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
