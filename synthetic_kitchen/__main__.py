import sys

from synthetic_kitchen.generate import main

sys.exit(main())
