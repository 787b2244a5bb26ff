import sys

from healthcheck.cli import main

sys.exit(main())
