"""``python -m streams.cli``: the same as the ``nexttrack`` console script."""

from streams.cli import main

if __name__ == "__main__":
    main()
