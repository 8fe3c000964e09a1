import sys

from tollway.devstack.dev import main

sys.exit(main())
