from imclass.cli import main
import sys
sys.exit(main())
