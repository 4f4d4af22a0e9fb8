import sys

from darkraw.cli import main

sys.exit(main())
