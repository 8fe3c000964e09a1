"""Run the demo upstream: ``python -m tollway.devstack.upstream --port 8900``."""

from tollway.devstack.upstream.cli import main

main()
