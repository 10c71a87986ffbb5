#!/usr/bin/env python
"""The unlearnbench command line: `python run_bench.py [run|list|report|tune] …`; run is the default command, so
`python run_bench.py --grid smoke` runs a grid (`--help` lists the commands, `COMMAND --help` their options)."""
import sys

from unlearnbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
