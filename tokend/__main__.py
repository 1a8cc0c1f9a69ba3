import sys

from tokend import cli

sys.exit(cli.main())
