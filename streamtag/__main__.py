import sys

from streamtag.cli import main

sys.exit(main())
