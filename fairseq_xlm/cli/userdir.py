"""``fairseq-xlm-userdir``: print the directory to pass to fairseq's ``--user-dir``."""

import os


def path() -> str:
    """The folder of the installed ``fairseq_xlm`` package (what ``--user-dir`` expects)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    print(path())


if __name__ == "__main__":
    main()
