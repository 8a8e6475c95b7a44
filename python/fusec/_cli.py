"""The ``fusec`` command of the wheel: the Rust command line, in-process."""

import sys

from . import _fusec


def main() -> None:
    sys.exit(_fusec.main(sys.argv))


if __name__ == "__main__":
    main()
