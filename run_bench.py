#!/usr/bin/env python
"""Run an unlearnbench grid: `python run_bench.py --grid smoke` (see --help)."""
import sys

from unlearnbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
