"""``autoid sandbox``: placeholder until the sandbox lands."""


def add_arguments(parser):
    parser.add_argument("--port", type=int, default=0)


def run(args) -> int:
    print("the sandbox is not built yet")
    return 0
