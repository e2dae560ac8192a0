import sys

from m3engine.bench.cli import main

sys.exit(main())
