"""``python -m drsdtp``: the same command as ``drsdtp``."""

from drsdtp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
