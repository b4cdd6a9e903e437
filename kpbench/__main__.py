"""`python -m kpbench` runs the CLI (and is what `torchrun -m kpbench` starts on each rank)."""

from kpbench.cli import main

if __name__ == "__main__":
    main()
