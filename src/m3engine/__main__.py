import sys

from m3engine.cli.main import main

sys.exit(main())
