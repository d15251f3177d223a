import sys

from lesiondet.cli import main

sys.exit(main())
