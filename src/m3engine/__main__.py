import sys

from m3engine.cli import main

sys.exit(main())
