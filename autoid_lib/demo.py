"""``autoid demo``: run the job against a seeded local sandbox (placeholder)."""


def add_arguments(parser):
    pass


def run(args) -> int:
    print("autoid demo: nothing to run yet")
    return 0
