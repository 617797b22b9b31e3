import sys

from awmjax.cli import main

sys.exit(main())
